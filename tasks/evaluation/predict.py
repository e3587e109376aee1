"""Predictions of a fine-tuned (or plain) model on task rows, their scores, and the rows scores are reported on.

    rows = eval_rows(spec, spec.eval_split, limit=500)                 # the same examples for every run
    preds = predict(spec, model, tokenizer, rows, PredictSettings(max_length=256, batch_size=32))
    metrics, examples = score(spec, rows, preds)                       # corpus metrics, one example_row each
    record_config["decoding"] = decoding(spec, settings)               # how generated predictions were decoded

The task's kind predicts (a label name, an answer span, a generated target); batches are sorted by length, so
scores do not depend on the batch size.
"""

from __future__ import annotations

from typing import Any

from tasks.data.load import load_split
from tasks.data.spec import TaskSpec
from tasks.errors import DataError
from tasks.evaluation.metrics import compute_metrics, example_scores
from tasks.evaluation.records import example_row
from tasks.kinds import PredictSettings, get_kind

__all__ = ["PredictSettings", "decoding", "eval_rows", "predict", "references", "score", "seeded_subset"]


def seeded_subset(rows: Any, n: int | None, seed: int) -> Any:
    """A seeded random subset of `n` rows of a `datasets.Dataset` (all rows, shuffled, when n is None or larger)."""
    rows = rows.shuffle(seed=seed)
    return rows.select(range(min(n, len(rows)))) if n is not None else rows


def eval_rows(spec: TaskSpec, split: str, limit: int | None, rows: Any = None) -> Any:
    """The rows scores are reported on: the first `limit` of a fixed shuffle (seed 0), the same for every run, so
    budget-limited scores of different methods and seeds compare on the same examples. `rows`: the split's rows,
    already loaded (else they are read with `load_split`)."""
    rows = rows if rows is not None else load_split(spec, split)
    return rows if limit is None or limit >= len(rows) else seeded_subset(rows, limit, 0)


def predict(spec: TaskSpec, model: Any, tokenizer: Any, rows: Any, settings: PredictSettings) -> list[str]:
    """One prediction string per row (through the task's kind); the model is put in eval mode meanwhile."""
    if len(rows) == 0:
        raise DataError(f"{spec.name}: nothing to predict (the split or --limit selects no rows)")
    was_training = model.training
    model.eval()
    try:
        return get_kind(spec.kind).predict(spec, model, tokenizer, rows, settings)
    finally:
        model.train(was_training)


def decoding(spec: TaskSpec, settings: PredictSettings) -> dict[str, Any] | None:
    """How `predict` decodes with these settings (the spec's `generation:` decoding unless `settings` override it):
    {"name": "beam 4 (length penalty 1.0), no repeated 3-grams", "num_beams": 4, ...}; None for kinds that do not
    generate text. What a run record's config carries next to the scores."""
    return get_kind(spec.kind).decoding(spec, settings) or None


def references(spec: TaskSpec, rows: Any) -> list[list[str]]:
    """Gold strings per row (the label name, the answer texts, the reference targets)."""
    kind = get_kind(spec.kind)
    return [kind.references(spec, row) for row in rows]


def score(spec: TaskSpec, rows: Any, predictions: list[str]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The task's corpus metrics and one `example_row` per example (id, prediction, references, scores)."""
    refs = references(spec, rows)
    metrics = compute_metrics(spec.metrics, predictions, refs, spec.label_names)
    examples = [example_row(i, p, r, example_scores(spec.metrics, p, r))
                for i, p, r in zip(rows["id"], predictions, refs)]
    return metrics, examples
