"""Bootstrap confidence intervals and paired bootstrap tests over a run's per-example predictions.

A *sampler* turns one run's predictions JSONL rows into a function of resampled example indices
`idx` (B, n) -> the metric on each resample (B,). How a metric is recomputed on a resample:

- accuracy, exact match, SQuAD F1, ROUGE-1/2/L: the mean of the per-example scores (`example_scores`), which
  equals the corpus metric for these.
- corpus BLEU and chrF: sacreBLEU's per-sentence sufficient statistics (n-gram matches and lengths, the ones
  its own paired bootstrap uses) are extracted once, summed over the resampled examples and turned into the corpus
  score: exactly `compute_metrics` on the resampled examples, at a fraction of the cost.
- binary F1 / macro F1 (classification): from resampled confusion counts (sklearn's definitions, zero_division=0).
- anything else: `tasks.evaluation.metrics.compute_metrics` on the resampled examples, with `FALLBACK_RESAMPLES`
  resamples.
Which metrics are means, and which way is better, comes from the metric registry.

Intervals are percentile intervals (2.5th and 97.5th percentiles of `RESAMPLES` resamples, seeded). The paired
test resamples the examples both rows scored (the same indices for both) and reports
p = (1 + #{resamples where the other row is at least as good}) / (1 + B), one-sided.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.data.spec import TaskSpec
from tasks.errors import RecordError
from tasks.evaluation.metrics import METRICS, compute_metrics, higher_is_better

RESAMPLES = 1000
FALLBACK_RESAMPLES = 200
SEED = 20240101
ALPHA = 0.05

Sampler = Callable[[np.ndarray], np.ndarray]


@dataclass
class Run:
    """One run's per-example predictions, keyed by example id."""

    ids: list[str]
    predictions: list[str]
    references: list[list[str]]
    scores: list[dict[str, float]]

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]]) -> "Run":
        ids, preds, refs, scores = [], [], [], []
        for r in rows:
            ids.append(str(r["id"]))
            preds.append(str(r["prediction"]))
            refs.append(list(r["references"]))
            scores.append(dict(r["scores"]))
        if len(set(ids)) != len(ids):
            raise RecordError("predictions repeat an example id; cannot pair examples")
        return cls(ids, preds, refs, scores)

    def subset(self, ids: Sequence[str]) -> "Run":
        pos = {i: k for k, i in enumerate(self.ids)}
        keep = [pos[i] for i in ids]
        return Run(list(ids), [self.predictions[k] for k in keep], [self.references[k] for k in keep],
                   [self.scores[k] for k in keep])


def is_mean_metric(task: TaskSpec, metric: str) -> bool:
    """Whether the metric is the mean of its per-example scores (so resampling averages them)."""
    return metric in METRICS and METRICS[metric].mean_of_examples


def _sacrebleu_sampler(task: TaskSpec, metric: str, run: Run) -> Sampler | None:
    try:
        from sacrebleu.metrics import BLEU, CHRF

        scorer = BLEU() if metric == "bleu" else CHRF()  # corpus_bleu / corpus_chrf defaults
        width = max(len(r) for r in run.references)
        streams = [[refs[j] if j < len(refs) else None for refs in run.references] for j in range(width)]
        stats = np.asarray(scorer._extract_corpus_statistics(run.predictions, streams), dtype=np.float64)
        scorer._compute_score_from_stats(stats.sum(0).tolist())
    except (ImportError, AttributeError, TypeError):  # private API changed: the generic path still works
        return None

    def sample(idx: np.ndarray) -> np.ndarray:
        return np.array([scorer._compute_score_from_stats(stats[row].sum(0).tolist()).score for row in idx])

    return sample


def _f1_sampler(task: TaskSpec, metric: str, run: Run) -> Sampler:
    labels = list(task.label_names)
    code = {name: i for i, name in enumerate(labels)}
    pred = np.array([code[p] for p in run.predictions])
    gold = np.array([code[r[0]] for r in run.references])
    classes = [1] if metric == "binary_f1" else list(range(len(labels)))  # binary F1: label_names[1] is positive

    def sample(idx: np.ndarray) -> np.ndarray:
        p, g = pred[idx], gold[idx]
        f1s = []
        for c in classes:
            tp = ((p == c) & (g == c)).sum(1)
            denom = 2 * tp + ((p == c) & (g != c)).sum(1) + ((p != c) & (g == c)).sum(1)
            f1s.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0))
        return 100.0 * np.mean(f1s, axis=0)

    return sample


def _generic_sampler(task: TaskSpec, metric: str, run: Run) -> Sampler:
    def sample(idx: np.ndarray) -> np.ndarray:
        return np.array([compute_metrics([metric], [run.predictions[i] for i in row],
                                         [run.references[i] for i in row], task.label_names)[metric] for row in idx])

    return sample


def sampler(task: TaskSpec, metric: str, run: Run) -> tuple[Sampler, bool]:
    """(the resampling function of `metric` for `run`, whether it is fast enough for `RESAMPLES` resamples)."""
    if is_mean_metric(task, metric):
        if not all(metric in s for s in run.scores):
            raise RecordError(f"per-example scores lack {metric!r}")
        values = np.array([s[metric] for s in run.scores], dtype=np.float64)
        return (lambda idx: values[idx].mean(1)), True
    if metric in ("bleu", "chrf"):
        fast = _sacrebleu_sampler(task, metric, run)
        if fast is not None:
            return fast, True
    if metric in ("binary_f1", "macro_f1"):
        return _f1_sampler(task, metric, run), True
    return _generic_sampler(task, metric, run), False


def _row_stat(task: TaskSpec, metric: str, runs: Sequence[Run], ids: Sequence[str]) -> tuple[Sampler, bool]:
    """Resampling function of a row (the mean over its runs, e.g. seeds) on the examples `ids`."""
    parts = [sampler(task, metric, r.subset(ids)) for r in runs]
    fast = all(f for _, f in parts)
    return (lambda idx: np.mean([s(idx) for s, _ in parts], axis=0)), fast


def common_ids(runs: Sequence[Run]) -> list[str]:
    if not runs:
        return []
    shared = set(runs[0].ids)
    for r in runs[1:]:
        shared &= set(r.ids)
    return [i for i in runs[0].ids if i in shared]


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


@dataclass
class Interval:
    low: float
    high: float
    n: int
    resamples: int


def confidence_interval(task: TaskSpec, metric: str, runs: Sequence[Run], seed: int = SEED,
                        resamples: int = RESAMPLES) -> Interval | None:
    """Percentile bootstrap 95% interval of a row's metric over its examples (None without examples)."""
    ids = common_ids(runs)
    if not ids:
        return None
    stat, fast = _row_stat(task, metric, runs, ids)
    b = resamples if fast else min(resamples, FALLBACK_RESAMPLES)
    values = stat(_indices(len(ids), b, seed))
    low, high = np.percentile(values, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return Interval(float(low), float(high), len(ids), b)


@dataclass
class PairedTest:
    p_value: float
    n: int
    resamples: int
    mean_difference: float  # best minus other, on the resamples (oriented so that positive = best is better)


def paired_test(task: TaskSpec, metric: str, best: Sequence[Run], other: Sequence[Run], seed: int = SEED,
                resamples: int = RESAMPLES) -> PairedTest | None:
    """One-sided paired bootstrap: is `other` worse than `best` on the examples both scored? None if none."""
    ids = common_ids([*best, *other])
    if not ids:
        return None
    stat_best, fast_b = _row_stat(task, metric, best, ids)
    stat_other, fast_o = _row_stat(task, metric, other, ids)
    b = resamples if fast_b and fast_o else min(resamples, FALLBACK_RESAMPLES)
    idx = _indices(len(ids), b, seed)
    diff = stat_best(idx) - stat_other(idx)
    if not higher_is_better(metric):
        diff = -diff
    p = (1 + int((diff <= 0).sum())) / (1 + b)
    return PairedTest(p, len(ids), b, float(diff.mean()))
