"""Task metrics, all on a 0-100 scale, computed by the reference libraries.

- classification: accuracy (+ binary F1 with `label_names[1]` as the positive class when the task lists
  `f1`, macro-F1 over all `label_names` when it lists `macro_f1`): scikit-learn.
- qa: exact match and token F1 with SQuAD v1.1's answer normalisation, max over the gold answers, averaged.
  The functions below follow the official evaluate-v1.1.py script step for step (lower-case, drop
  punctuation, drop the articles a/an/the, collapse whitespace; F1 over the bag of normalised tokens).
- translation (generation tasks listing `bleu`): sacreBLEU corpus BLEU and chrF with default settings.
- summarization (generation tasks listing `rouge*`): rouge_score's ROUGE-1/2/L F-measure with the Porter
  stemmer, max over an example's references (scitldr has several TLDRs), averaged over examples.

`predictions` are strings (label names for classification); `references[i]` lists example i's gold strings
(one label name for classification).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from tasks.registry import TaskSpec

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


# ---- SQuAD v1.1 (same steps as the official evaluation script) -------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower-case, remove punctuation, remove articles, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def squad_f1(prediction: str, reference: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    ref_tokens = normalize_answer(reference).split()
    same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if same == 0:  # also covers an empty prediction or reference, as the official script does
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


# ---- helpers ---------------------------------------------------------------------------------------------


def _metric_family(task: TaskSpec) -> str:
    if task.kind in ("classification", "qa"):
        return task.kind
    if task.kind == "generation":
        if "bleu" in task.metrics or "chrf" in task.metrics:
            return "translation"
        if any(m.startswith("rouge") for m in task.metrics):
            return "summarization"
    raise ValueError(f"task {task.name!r} (kind {task.kind!r}, metrics {task.metrics}) has no metric family here")


def _check(task: TaskSpec, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{task.name}: {len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        raise ValueError(f"{task.name}: no predictions to score")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not refs:
            raise ValueError(f"{task.name}: references[{i}] must be a non-empty list of strings, got {refs!r}")


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def _rouge_max(prediction: str, references: Sequence[str]) -> dict[str, float]:
    # score_multi keeps, per ROUGE type, the reference with the highest F-measure.
    scores = _rouge_scorer().score_multi(list(references), prediction)
    return {k: 100.0 * scores[k].fmeasure for k in ROUGE_TYPES}


# ---- public API ------------------------------------------------------------------------------------------


def compute_metrics(task: TaskSpec, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Corpus-level metrics of `task` (keys = `task.metrics`), every value on a 0-100 scale."""
    _check(task, predictions, references)
    family = _metric_family(task)
    if family == "classification":
        from sklearn.metrics import accuracy_score, f1_score

        gold = [refs[0] for refs in references]
        unknown = sorted({p for p in predictions} - set(task.label_names))
        if unknown:
            raise ValueError(f"{task.name}: predictions {unknown[:5]} are not label names {task.label_names}")
        out = {"accuracy": 100.0 * accuracy_score(gold, predictions)}
        if "f1" in task.metrics:
            out["f1"] = 100.0 * f1_score(gold, predictions, average="binary", pos_label=task.label_names[1],
                                         zero_division=0)
        if "macro_f1" in task.metrics:
            out["macro_f1"] = 100.0 * f1_score(gold, predictions, labels=list(task.label_names), average="macro",
                                               zero_division=0)
        return out
    if family == "qa":
        n = len(predictions)
        em = sum(max(squad_exact_match(p, r) for r in refs) for p, refs in zip(predictions, references))
        f1 = sum(max(squad_f1(p, r) for r in refs) for p, refs in zip(predictions, references))
        return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}
    if family == "translation":
        import sacrebleu

        # sacreBLEU takes reference *streams*; examples with fewer references are padded with None.
        width = max(len(refs) for refs in references)
        streams = [[refs[j] if j < len(refs) else None for refs in references] for j in range(width)]
        return {
            "bleu": float(sacrebleu.corpus_bleu(predictions, streams).score),
            "chrf": float(sacrebleu.corpus_chrf(predictions, streams).score),
        }
    per_example = [_rouge_max(p, refs) for p, refs in zip(predictions, references)]
    return {k: sum(s[k] for s in per_example) / len(per_example) for k in ROUGE_TYPES}


def example_scores(task: TaskSpec, prediction: str, references: list[str]) -> dict[str, float]:
    """Per-example scores for the predictions JSONL and bootstrap confidence intervals.

    The key `task.primary_metric` is always present on the 0-100 scale, so that for accuracy, exact match,
    F1 and ROUGE the mean over examples equals `compute_metrics`. BLEU/chrF here are sacreBLEU *sentence*
    scores (BLEU with its default exponential smoothing), whose mean differs from corpus BLEU/chrF.
    Classification also has `correct` (0 or 1).
    """
    _check(task, [prediction], [references])
    family = _metric_family(task)
    if family == "classification":
        correct = float(prediction == references[0])
        return {"correct": correct, "accuracy": 100.0 * correct}
    if family == "qa":
        return {
            "exact_match": 100.0 * max(squad_exact_match(prediction, r) for r in references),
            "f1": 100.0 * max(squad_f1(prediction, r) for r in references),
        }
    if family == "translation":
        import sacrebleu

        return {
            "bleu": float(sacrebleu.sentence_bleu(prediction, list(references)).score),
            "chrf": float(sacrebleu.sentence_chrf(prediction, list(references)).score),
        }
    return _rouge_max(prediction, references)
