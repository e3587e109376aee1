"""`gpt2suite eval`: score a fine-tuned model (or a backbone + adapter) on a task and write a run record.

    record = evaluate(spec, "runs/finetune/<task>/<run>/model", split="test", limit=500)

Input settings (max_length, doc_stride, num_beams, ...) come from the fine-tuning config layers for the method
the model was trained with (`full` for a plain backbone); `overrides` change them.
"""

from __future__ import annotations

import os
import time
from typing import Any

from gpt2core.typed_config import unknown_name
from tasks.data.registry import get_task
from tasks.data.spec import TaskSpec
from tasks.errors import TaskError
from tasks.evaluation.predict import decoding, eval_rows, predict, score
from tasks.evaluation.records import RunRecord, new_record, peak_memory_mb, write_run
from tasks.methods import adapters
from tasks.methods.finetune.config import METHOD_SETTINGS, load_finetune_config, method_fields, predict_settings


def evaluate(
    task: str | TaskSpec,
    model_path: str | os.PathLike,
    adapter: str | os.PathLike | None = None,
    split: str | None = None,
    limit: int | None = None,
    overrides: dict[str, Any] | None = None,
    runs_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    rows: Any = None,
) -> RunRecord:
    """Load the model (`adapters.load_trained`), predict on `split` (default: the task's eval split; the first
    `limit` rows of a fixed shuffle), score, and write the predictions and a record. `rows`: the split's rows,
    already loaded (tests, notebooks)."""
    spec = get_task(task)
    split = split or spec.eval_split
    if not spec.has_split(split):
        raise TaskError(str(unknown_name("split", split, spec.splits, f"task {spec.name!r}")))
    model, tokenizer, info = adapters.load_trained(spec, model_path, adapter, device=device)
    method = info["method"]
    cfg_method = method if method in adapters.METHODS else "full"
    cfg = load_finetune_config(spec, cfg_method, overrides=overrides)
    if cfg.threads is not None:
        import torch

        torch.set_num_threads(cfg.threads)
    rows = eval_rows(spec, split, limit, rows)
    reserved = adapters.n_virtual_tokens(model)
    max_length = min(cfg.max_length, model.config.n_positions)
    settings = predict_settings(spec, cfg, max_length, reserved)
    t0 = time.perf_counter()
    predictions = predict(spec, model, tokenizer, rows, settings)
    metrics, examples = score(spec, rows, predictions)
    eval_seconds = time.perf_counter() - t0
    trainable, total = adapters.count_parameters(model)
    # The common fields only: a trained adapter's settings are its own (its folder's adapter_config.json), not
    # the config layers'.
    common = {k: v for k, v in method_fields(cfg, cfg_method).items() if k not in METHOD_SETTINGS}
    config = common | {"split": split, "limit": limit, "adapter": info["adapter"], "base_model": info["base_model"],
                       "evaluated_model": str(model_path), "decoding": decoding(spec, settings)}
    record = new_record(spec, method, info["base_model"], split=split, metrics=metrics, n_examples=len(rows),
                        seed=cfg.seed, config=config, trainable_params=trainable, total_params=total,
                        eval_seconds=eval_seconds, peak_memory_mb=peak_memory_mb())
    write_run(record, examples, runs_dir)
    return record
