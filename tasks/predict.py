"""Predictions of a fine-tuned (or plain) model on task rows, and their scores.

    settings = PredictSettings(max_length=256, batch_size=32)
    preds = predict(task, model, tokenizer, rows, settings)           # label names / answers / generated text
    metrics, per_example = score(task, rows, preds)                    # tasks.metrics, plus one dict per example

- classification: the head's argmax, as a label name.
- qa: run_qa.py's postprocessing: over every window of an example, the best of the n-best start x end pairs
  that lie in the context, end >= start and span at most `max_answer_length` tokens, mapped back to characters.
- generation: greedy (the backbone's fast KV-cache loop) or beam search (`num_beams` > 1, transformers'
  generate), stopping at EOS or a newline, at most `max_new_tokens` (default: the task's `max_target_tokens`).

Batches are sorted by length so padding stays small; scores do not depend on the batch size.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tasks.features import prompt_ids, qa_eval_features
from tasks.registry import TaskSpec

STOP_STRINGS = ["\n"]


@dataclass
class PredictSettings:
    max_length: int = 512  # tokens per input (QA window, classification text, generation prompt + output)
    batch_size: int = 32
    doc_stride: int = 128  # QA: overlap of consecutive windows
    max_answer_length: int = 30  # QA: longest answer span, in tokens
    n_best: int = 20  # QA: start and end candidates per window
    num_beams: int = 1  # generation: 1 = greedy
    max_new_tokens: int | None = None  # generation: default task.max_target_tokens
    keep_source: str = "start"  # generation: which part of a long source to keep ("start" or "end")
    reserved_positions: int = 0  # positions taken by prompt/prefix tuning's virtual tokens


def references(task: TaskSpec, rows: Any) -> list[list[str]]:
    """Gold strings per row: the label name, the answer texts, or the reference targets."""
    if task.kind == "classification":
        return [[task.label_names[int(label)]] for label in rows["label"]]
    if task.kind == "qa":
        return [list(a["text"]) for a in rows["answers"]]
    return [list(refs) for refs in rows["references"]]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _pad(tokenizer: Any, seqs: list[list[int]], side: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, sl] = torch.tensor(s, dtype=torch.long)
        mask[i, sl] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def predict_classification(model: Any, tokenizer: Any, task: TaskSpec, rows: Any, s: PredictSettings) -> list[str]:
    max_len = s.max_length - s.reserved_positions
    seqs = tokenizer(list(rows["text"]), truncation=True, max_length=max_len)["input_ids"]
    preds: list[str] = [""] * len(seqs)
    device = _device(model)
    for batch in _batches([len(x) for x in seqs], s.batch_size):
        ids, mask = _pad(tokenizer, [seqs[i] for i in batch], "right", device)
        logits = model(input_ids=ids, attention_mask=mask).logits
        for i, label in zip(batch, logits.argmax(-1).tolist()):
            preds[i] = task.label_names[label]
    return preds


@torch.inference_mode()
def qa_logits(model: Any, tokenizer: Any, features: Any, batch_size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits of every window (each trimmed to the window's length)."""
    seqs = features["input_ids"]
    starts: list[Any] = [None] * len(seqs)
    ends: list[Any] = [None] * len(seqs)
    device = _device(model)
    for batch in _batches([len(x) for x in seqs], batch_size):
        ids, mask = _pad(tokenizer, [seqs[i] for i in batch], "right", device)
        out = model(input_ids=ids, attention_mask=mask)
        for j, i in enumerate(batch):
            n = len(seqs[i])
            starts[i] = out.start_logits[j, :n].float().cpu().numpy()
            ends[i] = out.end_logits[j, :n].float().cpu().numpy()
    return starts, ends


def postprocess_qa(
    rows: Any,
    features: Any,
    start_logits: list[np.ndarray],
    end_logits: list[np.ndarray],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """Example id -> answer text: the highest start + end logit span over all of the example's windows
    (run_qa.py's `postprocess_qa_predictions` for SQuAD v1, which always has an answer)."""
    windows = defaultdict(list)
    for w, example_id in enumerate(features["example_id"]):
        windows[example_id].append(w)
    offsets_all = features["offset_mapping"]
    answers: dict[str, str] = {}
    for example_id, context in zip(rows["id"], rows["context"]):
        best_score, best = -np.inf, ""
        for w in windows.get(example_id, []):
            start, end, offsets = start_logits[w], end_logits[w], offsets_all[w]
            for si in np.argsort(start)[::-1][:n_best]:
                if si >= len(offsets) or offsets[si] is None:
                    continue
                for ei in np.argsort(end)[::-1][:n_best]:
                    if ei >= len(offsets) or offsets[ei] is None or ei < si or ei - si + 1 > max_answer_length:
                        continue
                    score = float(start[si] + end[ei])
                    if score > best_score:
                        best_score, best = score, context[offsets[si][0]:offsets[ei][1]]
        answers[example_id] = best.strip()  # byte-level BPE tokens carry their leading space
    return answers


def predict_qa(model: Any, tokenizer: Any, task: TaskSpec, rows: Any, s: PredictSettings) -> list[str]:
    features = qa_eval_features(rows, tokenizer, task, s.max_length - s.reserved_positions, s.doc_stride)
    starts, ends = qa_logits(model, tokenizer, features, s.batch_size)
    answers = postprocess_qa(rows, features, starts, ends, s.n_best, s.max_answer_length)
    return [answers[i] for i in rows["id"]]


def clean_generation(text: str) -> str:
    """The generated target: up to the first stop string, without surrounding spaces."""
    for stop in STOP_STRINGS:
        text = text.split(stop, 1)[0]
    return text.strip()


@torch.inference_mode()
def predict_generation(model: Any, tokenizer: Any, task: TaskSpec, rows: Any, s: PredictSettings) -> list[str]:
    max_new = s.max_new_tokens or task.max_target_tokens
    max_prompt = s.max_length - s.reserved_positions - max_new
    if max_prompt < 8:
        raise ValueError(f"max_length {s.max_length} leaves {max_prompt} prompt tokens after {max_new} new tokens "
                         f"and {s.reserved_positions} virtual tokens; raise max_length or lower max_new_tokens")
    prompts = [prompt_ids(tokenizer, task, src, max_prompt, s.keep_source) for src in rows["source"]]
    preds: list[str] = [""] * len(prompts)
    device = _device(model)
    gen_args: dict[str, Any] = dict(max_new_tokens=max_new, eos_token_id=tokenizer.eos_token_id,
                                    pad_token_id=tokenizer.pad_token_id, stop_strings=STOP_STRINGS,
                                    tokenizer=tokenizer)
    if s.num_beams > 1:
        gen_args.update(num_beams=s.num_beams, do_sample=False, early_stopping=True)
    for batch in _batches([len(p) for p in prompts], s.batch_size):
        ids, mask = _pad(tokenizer, [prompts[i] for i in batch], "left", device)
        out = model.generate(input_ids=ids, attention_mask=mask, **gen_args)
        for j, i in enumerate(batch):
            preds[i] = clean_generation(tokenizer.decode(out[j, ids.shape[1]:].tolist(), skip_special_tokens=True))
    return preds


PREDICTORS = {"classification": predict_classification, "qa": predict_qa, "generation": predict_generation}


def predict(task: TaskSpec, model: Any, tokenizer: Any, rows: Any, settings: PredictSettings) -> list[str]:
    """One prediction string per row (label name, answer, or generated target); the model is put in eval mode."""
    if len(rows) == 0:
        raise ValueError(f"{task.name}: nothing to predict (the split or --limit selects no rows)")
    was_training = model.training
    model.eval()
    try:
        return PREDICTORS[task.kind](model, tokenizer, task, rows, settings)
    finally:
        model.train(was_training)


def score(task: TaskSpec, rows: Any, predictions: list[str]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Corpus metrics (tasks.metrics) and one JSON-ready row per example: id, prediction, references, scores."""
    from tasks.metrics import compute_metrics, example_scores

    refs = references(task, rows)
    metrics = compute_metrics(task, predictions, refs)
    per_example = [
        {"id": str(i), "prediction": p, "references": r, **example_scores(task, p, r)}
        for i, p, r in zip(rows["id"], predictions, refs)
    ]
    return metrics, per_example


def evaluate(
    task: str | TaskSpec,
    model_path: str,
    adapter: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    overrides: dict[str, Any] | None = None,
    runs_dir: str | None = None,
    device: str = "cpu",
    rows: Any = None,
) -> dict[str, Any]:
    """`gpt2suite eval`: load a fine-tuned model (or backbone + adapter), predict on `split` (default: the task's
    eval split; the first `limit` rows of a fixed shuffle), score, and write predictions + a run record.

    Input settings (max_length, doc_stride, num_beams, ...) come from the same config layers as fine-tuning,
    for the method the model was trained with; `overrides` change them. `rows`: the split's rows, already
    loaded (tests, notebooks). Returns the record (with `_path`)."""
    import time

    from tasks import adapters, records
    from tasks.finetune import eval_rows, load_finetune_config, predict_settings
    from tasks.registry import get_task

    spec = get_task(task) if isinstance(task, str) else task
    model, tokenizer, info = adapters.load_trained(spec, model_path, adapter, device=device)
    method = info["method"]
    cfg = load_finetune_config(spec, method if method in adapters.METHODS else "full", overrides=overrides)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    split = split or spec.eval_split
    rows = eval_rows(spec, split, limit, rows)
    reserved = adapters.n_virtual_tokens(model)
    max_length = min(cfg.max_length, model.config.n_positions)
    settings = predict_settings(spec, cfg, max_length, reserved)
    t0 = time.perf_counter()
    predictions = predict(spec, model, tokenizer, rows, settings)
    metrics, per_example = score(spec, rows, predictions)
    eval_seconds = time.perf_counter() - t0
    trainable, total = adapters.count_parameters(model)
    import dataclasses

    config = dataclasses.asdict(cfg) | {"split": split, "limit": limit, "adapter": info["adapter"],
                                        "base_model": info["base_model"], "evaluated_model": str(model_path)}
    record = records.make_record(
        task=spec, method=method, model_path=info["base_model"], split=split, n_examples=len(rows),
        metrics=metrics, predictions=None, seed=cfg.seed, config=config, trainable_params=trainable,
        total_params=total, eval_seconds=eval_seconds, peak_memory_mb=records.peak_memory_mb(),
    )
    path = records.write_run(record, per_example, runs_dir=runs_dir)
    record = records.read_record(path)
    record["_path"] = str(path)
    return record
