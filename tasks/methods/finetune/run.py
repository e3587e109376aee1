"""One fine-tuning run: train on the task, save what trained, evaluate on the reported split, write the record.

    cfg = load_finetune_config(spec, "lora", overrides={"epochs": 1, "max_train_examples": 2000})
    record = finetune(spec, "lora", "results/backbones/default", cfg)      # a RunRecord

Training scores a seeded subset of the task's `validation` split at every evaluation (early stopping and the
best checkpoint need it; a spec without one cannot be fine-tuned). When `validation` is also the split the run
reports (GLUE-style tasks whose test labels are hidden), that subset is held out of the training split instead,
so no choice made in training sees the reported examples. A run killed in training resumes from the last
checkpoint in `out_dir`/checkpoints when run again with the same config (`resume: false` starts over). Under
DDP only the first process saves, evaluates and writes the record. torch and transformers are imported when a
run starts, so the command line's help and the leaderboard's planning, which import this package, stay fast.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from gpt2core.paths import REPO_ROOT
from gpt2core.typed_config import unknown_name
from tasks.data.load import load_split
from tasks.data.registry import get_task
from tasks.data.spec import TaskSpec
from tasks.errors import TaskError
from tasks.evaluation.predict import decoding, eval_rows, predict, score, seeded_subset
from tasks.evaluation.records import RunRecord, new_record, peak_memory_mb, write_run
from tasks.kinds import get_kind
from tasks.methods import adapters
from tasks.methods.finetune.config import (FinetuneConfig, load_finetune_config, method_fields, predict_settings,
                                           sized_val_examples)

DEFAULT_MODEL = REPO_ROOT / "results" / "backbones" / "default"
VALIDATION = "validation"  # the split scored during training


def default_out_dir(spec: TaskSpec, method: str, model_path: str | os.PathLike, seed: int) -> Path:
    return REPO_ROOT / "runs" / "finetune" / spec.name / f"{method}-{Path(model_path).name}-seed{seed}"


def check_finetunable(spec: TaskSpec, method: str, split: str) -> None:
    """Bad input a run would fail on, raised before anything is loaded or written."""
    adapters.check_method(spec, method)
    if not spec.has_split(VALIDATION):
        raise TaskError(f"task {spec.name!r} has no {VALIDATION!r} split (splits: {', '.join(spec.splits)}); "
                        f"fine-tuning scores one for early stopping: add one to its spec (e.g. "
                        f"`{VALIDATION}: {{carve_from: {spec.train_split}, share: 0.1}}`)")
    if not spec.has_split(split):
        raise TaskError(str(unknown_name("split", split, spec.splits, f"task {spec.name!r}")))


def trained_on(cfg: FinetuneConfig, n_rows: int) -> int:
    """How many distinct training rows the run sees: all of them, or fewer when `max_steps` ends it sooner."""
    if cfg.max_steps <= 0:
        return n_rows
    per_step = cfg.batch_size * cfg.grad_accum * int(os.environ.get("WORLD_SIZE", "1"))
    return min(n_rows, cfg.max_steps * per_step)


def training_rows(spec: TaskSpec, cfg: FinetuneConfig, split: str, train: Any,
                  validation: Any) -> tuple[Any, Any, str]:
    """(training rows, validation rows scored in training, where the latter came from). Training rows are the
    first `max_train_examples` of a seeded shuffle of the training split; if the reported split is `validation`
    (or `val_from_train` says so), the validation rows are the last ones of that shuffle (never trained on,
    disjoint from the reported split)."""
    if not (cfg.val_from_train if cfg.val_from_train is not None else split == VALIDATION):
        train_rows = seeded_subset(train, cfg.max_train_examples, cfg.seed)
        n_val = sized_val_examples(cfg, trained_on(cfg, len(train_rows)))
        return train_rows, seeded_subset(validation, n_val, cfg.seed), VALIDATION
    shuffled = train.shuffle(seed=cfg.seed)
    n_val = sized_val_examples(cfg, trained_on(cfg, min(cfg.max_train_examples or len(shuffled), len(shuffled))))
    n_train = min(cfg.max_train_examples or len(shuffled), len(shuffled) - n_val)
    if n_train < 1:
        raise TaskError(f"{spec.name}: {len(shuffled)} training rows leave none to train on after holding out "
                        f"{n_val} for validation (the reported split is {split!r}, so early stopping scores rows "
                        "held out of training); give more training rows, or set val_from_train: false to select "
                        f"on {VALIDATION!r} itself")
    held_out = shuffled.select(range(len(shuffled) - n_val, len(shuffled)))
    return shuffled.select(range(n_train)), held_out, f"{spec.train_split} (held out)"


def run_rows(spec: TaskSpec, cfg: FinetuneConfig, split: str,
             rows: dict[str, Any] | None = None) -> tuple[Any, Any, str, Any]:
    """(training rows, validation rows, where those came from, reported rows) of one run: `training_rows` and the
    reported split's `eval_rows`, from `rows` (split name -> already loaded rows) where given, else `load_split`."""
    given = rows or {}

    def split_rows(name: str) -> Any:
        return given[name] if given.get(name) is not None else load_split(spec, name)

    train_rows, val_rows, val_source = training_rows(
        spec, cfg, split, split_rows(spec.train_split), split_rows(VALIDATION))
    return train_rows, val_rows, val_source, eval_rows(spec, split, cfg.max_eval_examples, split_rows(split))


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in `folder` (its trainer state, written last, parses), or None."""
    found = []
    for path in folder.glob("checkpoint-*"):
        try:
            json.loads((path / "trainer_state.json").read_text())
            found.append((int(path.name.split("-")[-1]), path))
        except (OSError, ValueError):
            continue  # killed while it was being written
    return max(found)[1] if found else None


def resume_point(checkpoints: Path, fingerprint: dict[str, Any], enabled: bool) -> Path | None:
    """The checkpoint to resume from: the newest complete one, if the folder's run had this config; otherwise
    the folder is emptied (a run with another config, or `resume: false`, starts over). Under DDP every process
    reads the same answer; only the first one empties the folder."""
    marker = checkpoints / "run_config.json"
    try:
        same = json.loads(marker.read_text()) == json.loads(json.dumps(fingerprint, default=str))
    except (OSError, ValueError):
        same = False
    found = last_checkpoint(checkpoints) if enabled and same else None
    if found is None and int(os.environ.get("RANK", "0")) == 0:
        shutil.rmtree(checkpoints, ignore_errors=True)
        checkpoints.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(fingerprint, default=str, sort_keys=True))
        os.replace(tmp, marker)
    return found


def finetune(
    task: str | TaskSpec,
    method: str,
    model_path: str | os.PathLike = DEFAULT_MODEL,
    cfg: FinetuneConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    split: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    rows: dict[str, Any] | None = None,
) -> RunRecord | None:
    """Train, save (into `out_dir`/model), evaluate on `split` (default: the task's eval split) and write a run
    record (into `runs_dir`, default runs/records). Returns the record (None on non-main DDP processes).

    `rows` maps split names to already loaded rows (tests, notebooks) used instead of `load_split`; the
    budgets (max_train_examples, val_examples, max_eval_examples) still apply to them."""
    import torch
    from transformers import set_seed

    from gpt2core.checkpoint import load_model
    from tasks.methods.finetune.trainer import build_trainer, training_log, training_seconds

    spec = get_task(task)
    split = split or spec.eval_split
    check_finetunable(spec, method, split)
    cfg = cfg or load_finetune_config(spec, method)
    out = Path(out_dir) if out_dir is not None else default_out_dir(spec, method, model_path, cfg.seed)
    kind = get_kind(spec.kind)

    # Everything that can fail on bad input happens before training starts and before anything is written.
    tokenizer = adapters.tokenizer_of(model_path)  # first: a wrong --model fails at once, not after loading data
    train_rows, val_rows, val_source, test_rows = run_rows(spec, cfg, split, rows)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    backbone = load_model(model_path)
    model = adapters.build_model(spec, backbone, method, cfg)
    reserved = adapters.n_virtual_tokens(model)
    max_length = min(cfg.max_length, backbone.config.n_positions) - reserved
    train_ds = kind.train_features(spec, train_rows, tokenizer, cfg, max_length)
    val_ds = kind.train_features(spec, val_rows, tokenizer, cfg, max_length)
    settings = predict_settings(spec, cfg, max_length + reserved, reserved)

    def scorer(m: Any) -> dict[str, float]:
        return score(spec, val_rows, predict(spec, m, tokenizer, val_rows, settings))[0]

    fingerprint = method_fields(cfg, method) | {"model": str(model_path), "split": split}
    resume = resume_point(out / "checkpoints", fingerprint, cfg.resume)
    trainer = build_trainer(spec, model, tokenizer, cfg, out / "checkpoints", train_ds, val_ds, scorer)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_seconds = training_seconds(trainer)  # summed over the invocations of a resumed run
    if not trainer.is_world_process_zero():
        return None

    model = trainer.accelerator.unwrap_model(trainer.model)
    adapters.save_trained(model, out / "model", spec, method, model_path, tokenizer)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the best checkpoint is what was just saved
    trainable, total = adapters.count_parameters(model)

    t0 = time.perf_counter()
    predictions = predict(spec, model, tokenizer, test_rows, settings)
    metrics, examples = score(spec, test_rows, predictions)
    eval_seconds = time.perf_counter() - t0

    # The config as it ran: what defines the result (common fields, this method's block) and the effective values.
    config = method_fields(cfg, method) | {
        "max_length_effective": max_length, "bf16_effective": trainer.args.bf16, "split": split,
        "train_examples": len(train_rows), "val_examples_used": len(val_rows), "val_source": val_source,
        "out_dir": str(out), "world_size": trainer.args.world_size, "decoding": decoding(spec, settings)}
    record = new_record(
        spec, method, model_path, split=split, metrics=metrics, n_examples=len(test_rows), seed=cfg.seed,
        config=config, trainable_params=trainable, total_params=total, train_seconds=train_seconds,
        eval_seconds=eval_seconds, peak_memory_mb=peak_memory_mb(),
        tokens_seen=int(trainer.state.num_input_tokens_seen),
        details={"training": training_log(trainer, len(train_ds))
                 | {"resumed_from": resume.name if resume else None}})
    write_run(record, examples, runs_dir)
    return record
