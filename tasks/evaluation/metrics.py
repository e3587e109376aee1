"""The metric registry: name -> how the corpus value and the per-example scores are computed, whether it is
the mean of its per-example scores (the bootstrap then averages them), and which way is better.

Every value is on a 0-100 scale (perplexities and bits per byte excepted) and is computed by the reference
libraries, grouped so that one library call serves the metrics that share it:
- `classification`: accuracy, binary F1 (`labels[1]` is the positive class), macro-F1: scikit-learn.
- `answer_overlap`: exact match and token F1 with SQuAD v1.1's answer normalisation, max over the gold answers; the
  functions follow the official evaluate-v1.1.py step for step (it is not a library, so it is copied here).
- `sacrebleu`: corpus BLEU and chrF with default settings (per example: sentence BLEU / chrF).
- `rouge`: rouge_score's ROUGE-1/2/L F-measure with the Porter stemmer, max over an example's references.
- `perplexity`: computed by the language-modelling kind from log-likelihoods, not from predictions.
- `ranked_answers`: `accuracy_norm`, the accuracy of prompted classification when labels are ranked by
  log-likelihood per answer byte (lm-eval's `acc_norm`; `accuracy` is the summed log-likelihood's, lm-eval's
  `acc`). The classification kind computes it when it prompts: a row's `prediction` is the sum rule's, so it is
  not computable from predictions; its per-example scores are in the rows, and the bootstrap averages them.

`predictions` are strings (label names for classification); `references[i]` lists example i's gold strings.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tasks.errors import DataError

CLASSIFICATION = "classification"
QA = "extractive_qa"
GENERATION = "conditional_generation"
LM = "language_modelling"


@dataclass(frozen=True)
class Metric:
    name: str
    group: str
    kinds: tuple[str, ...]
    mean_of_examples: bool  # the corpus value is the mean of the per-example values
    higher_is_better: bool = True
    label: str = ""  # how a table names it

    @property
    def display(self) -> str:
        return self.label or self.name


METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("accuracy", "classification", (CLASSIFICATION,), True, label="accuracy"),
    Metric("accuracy_norm", "ranked_answers", (CLASSIFICATION,), True, label="accuracy (byte-normalized)"),
    Metric("binary_f1", "classification", (CLASSIFICATION,), False, label="F1 (positive class)"),
    Metric("macro_f1", "classification", (CLASSIFICATION,), False, label="macro-F1"),
    Metric("exact_match", "answer_overlap", (QA,), True, label="exact match"),
    Metric("f1", "answer_overlap", (QA,), True, label="token F1"),
    Metric("bleu", "sacrebleu", (GENERATION, QA), False, label="BLEU"),
    Metric("chrf", "sacrebleu", (GENERATION, QA), False, label="chrF"),
    Metric("rouge1", "rouge", (GENERATION, QA), True, label="ROUGE-1"),
    Metric("rouge2", "rouge", (GENERATION, QA), True, label="ROUGE-2"),
    Metric("rougeL", "rouge", (GENERATION, QA), True, label="ROUGE-L"),
    Metric("bits_per_byte", "perplexity", (LM,), False, higher_is_better=False, label="bits per byte"),
    Metric("token_perplexity", "perplexity", (LM,), False, higher_is_better=False, label="token perplexity"),
    Metric("word_perplexity", "perplexity", (LM,), False, higher_is_better=False, label="word perplexity"),
    Metric("nll", "perplexity", (LM,), False, higher_is_better=False, label="NLL (nats)"),
]}


def metric(name: str) -> Metric:
    if name not in METRICS:
        raise DataError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


def higher_is_better(name: str) -> bool:
    return METRICS[name].higher_is_better if name in METRICS else True


# ---- SQuAD v1.1 (same steps as the official evaluation script) -------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower-case, remove punctuation, remove articles, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def answer_f1(prediction: str, reference: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    ref_tokens = normalize_answer(reference).split()
    same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if same == 0:  # also covers an empty prediction or reference, as the official script does
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


# ---- groups ----------------------------------------------------------------------------------------------

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def _rouge_max(prediction: str, references: Sequence[str]) -> dict[str, float]:
    # score_multi keeps, per ROUGE type, the reference with the highest F-measure.
    scores = _rouge_scorer().score_multi(list(references), prediction)
    return {k: 100.0 * scores[k].fmeasure for k in ROUGE_TYPES}


def _streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    # sacreBLEU takes reference *streams*; examples with fewer references are padded with None.
    width = max(len(refs) for refs in references)
    return [[refs[j] if j < len(refs) else None for refs in references] for j in range(width)]


def _corpus_group(group: str, labels: Sequence[str], predictions: list[str],
                  references: list[list[str]]) -> dict[str, float]:
    if group == "classification":
        from sklearn.metrics import accuracy_score, f1_score

        gold = [refs[0] for refs in references]
        unknown = sorted(set(predictions) - set(labels))
        if unknown:
            raise DataError(f"predictions {unknown[:5]} are not label names {list(labels)}")
        return {
            "accuracy": 100.0 * accuracy_score(gold, predictions),
            "binary_f1": 100.0 * f1_score(gold, predictions, average="binary", pos_label=labels[1],
                                          zero_division=0) if len(labels) == 2 else float("nan"),
            "macro_f1": 100.0 * f1_score(gold, predictions, labels=list(labels), average="macro", zero_division=0),
        }
    if group == "answer_overlap":
        n = len(predictions)
        em = sum(max(answer_exact_match(p, r) for r in refs) for p, refs in zip(predictions, references))
        f1 = sum(max(answer_f1(p, r) for r in refs) for p, refs in zip(predictions, references))
        return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}
    if group == "sacrebleu":
        import sacrebleu

        streams = _streams(references)
        return {"bleu": float(sacrebleu.corpus_bleu(predictions, streams).score),
                "chrf": float(sacrebleu.corpus_chrf(predictions, streams).score)}
    if group == "rouge":
        per_example = [_rouge_max(p, refs) for p, refs in zip(predictions, references)]
        return {k: sum(s[k] for s in per_example) / len(per_example) for k in ROUGE_TYPES}
    raise DataError(f"metrics of group {group!r} are not computed from predictions")


def _example_group(group: str, prediction: str, references: list[str]) -> dict[str, float]:
    if group == "classification":
        correct = float(prediction == references[0])
        return {"correct": correct, "accuracy": 100.0 * correct}
    if group == "answer_overlap":
        return {"exact_match": 100.0 * max(answer_exact_match(prediction, r) for r in references),
                "f1": 100.0 * max(answer_f1(prediction, r) for r in references)}
    if group == "sacrebleu":
        import sacrebleu

        return {"bleu": float(sacrebleu.sentence_bleu(prediction, list(references)).score),
                "chrf": float(sacrebleu.sentence_chrf(prediction, list(references)).score)}
    if group == "rouge":
        return _rouge_max(prediction, references)
    raise DataError(f"metrics of group {group!r} have no per-example scores")


def _check(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(predictions) != len(references):
        raise DataError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        raise DataError("no predictions to score")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not refs:
            raise DataError(f"references[{i}] must be a non-empty list of strings, got {refs!r}")


def _groups(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(metric(n).group for n in names))


def compute_metrics(metrics: Sequence[str], predictions: list[str], references: list[list[str]],
                    labels: Sequence[str] = ()) -> dict[str, float]:
    """Corpus values of `metrics` (a task's `metrics` list), in that order. `labels`: classification's label names."""
    _check(predictions, references)
    values: dict[str, float] = {}
    for group in _groups(metrics):
        values.update(_corpus_group(group, labels, predictions, references))
    return {m: values[m] for m in metrics}


def example_scores(metrics: Sequence[str], prediction: str, references: list[str]) -> dict[str, float]:
    """Per-example scores for the predictions file and the bootstrap: every mean-of-examples metric of the task
    (their mean equals the corpus value), BLEU/chrF as sacreBLEU *sentence* scores (their mean differs from the
    corpus score); classification also has `correct` (0 or 1)."""
    _check([prediction], [references])
    out: dict[str, float] = {}
    for group in _groups(metrics):
        if group in ("classification", "answer_overlap", "sacrebleu", "rouge"):
            scores = _example_group(group, prediction, references)
            out.update({k: v for k, v in scores.items() if k in metrics or k == "correct"})
    return out
