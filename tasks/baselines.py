"""Classic baselines: predictions that go through the same metrics and run-record path as the models.

| kind | method | rule |
|---|---|---|
| classification | `majority` | the most frequent train label, for every example |
| classification | `tfidf-lr` | TF-IDF of word 1-2-grams (sublinear tf) + logistic regression (scikit-learn, C=10) |
| summarization | `lead-k` | the first k sentences of the document: k=1 for scitldr, k=3 for bbc-news |
| translation | `copy-source` | the English source, unchanged |
| qa | `best-sentence` | the context sentence with the most question unigrams (SQuAD-normalised tokens) |
| qa | `best-sentence-span` | in that sentence, the longest run of consecutive words not in the question |

Sentences are split after `.`, `!` or `?` followed by whitespace and an upper-case letter, digit or quote
(a regex; no model). Ties between sentences go to the earlier one.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.metrics import compute_metrics, example_scores, normalize_answer
from tasks.registry import TaskError, TaskSpec

LEAD_K = {"scitldr": 1, "bbc-news": 3}
METHODS = {
    "classification": ("tfidf-lr", "majority"),
    "summarization": ("lead-k",),
    "translation": ("copy-source",),
    "qa": ("best-sentence", "best-sentence-span"),
}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'“‘(\[])")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def baseline_family(task: TaskSpec) -> str:
    if task.kind != "generation":
        return task.kind
    return "translation" if "bleu" in task.metrics else "summarization"


# ---- the rules ---------------------------------------------------------------------------------------------


def majority_label(train_rows: Sequence[dict[str, Any]]) -> int:
    """The most frequent label; ties go to the smaller label index (deterministic)."""
    counts = Counter(r["label"] for r in train_rows)
    return min(counts, key=lambda c: (-counts[c], c))


def fit_tfidf_lr(train_rows: Sequence[dict[str, Any]], seed: int = 0) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(C=10.0, max_iter=2000, random_state=seed),
    )
    return model.fit([r["text"] for r in train_rows], [r["label"] for r in train_rows])


def lead_k(source: str, k: int) -> str:
    return " ".join(split_sentences(source)[:k])


def best_sentence(question: str, context: str) -> str:
    """The context sentence sharing the most distinct (normalised) unigrams with the question."""
    q = set(normalize_answer(question).split())
    sentences = split_sentences(context) or [context]
    overlaps = [len(q & set(normalize_answer(s).split())) for s in sentences]
    return sentences[overlaps.index(max(overlaps))]


def best_sentence_span(question: str, context: str) -> str:
    """In `best_sentence`, the longest run of consecutive words whose normalised form is not a question word
    (answers fill the question's gap, so they rarely repeat its words); the whole sentence if no word is left."""
    q = set(normalize_answer(question).split())
    words = best_sentence(question, context).split()
    best: list[str] = []
    run: list[str] = []
    for w in words:
        norm = normalize_answer(w)
        if norm and norm in q:
            run = []
            continue
        run.append(w)
        if len(run) > len(best):
            best = list(run)
    return " ".join(best).strip(" ,;:.") or " ".join(words)


# ---- running -----------------------------------------------------------------------------------------------


@dataclass
class BaselineResult:
    task: TaskSpec
    method: str
    split: str
    metrics: dict[str, float]
    rows: list[dict[str, Any]]
    config: dict[str, Any]
    train_seconds: float | None = None
    eval_seconds: float = 0.0
    trainable_params: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


def run_baseline(task: TaskSpec, method: str | None = None, split: str | None = None, limit: int | None = None,
                 seed: int = 0, max_train: int | None = None,
                 train_rows: Sequence[dict[str, Any]] | None = None,
                 eval_rows: Sequence[dict[str, Any]] | None = None) -> BaselineResult:
    """Run one baseline on `task`'s evaluated split (first `limit` examples). `method` defaults to the first
    method listed for the task's family; `max_train` keeps the first N train rows (classification)."""
    from tasks.registry import load_split

    family = baseline_family(task)
    method = method or METHODS[family][0]
    if method not in METHODS[family]:
        raise TaskError(f"baseline {method!r} does not apply to {task.name} ({family}); choose one of "
                        f"{', '.join(METHODS[family])}")
    split = split or task.eval_split
    if eval_rows is None:
        eval_rows = load_split(task, split).to_list()
    eval_rows = list(eval_rows[:limit] if limit else eval_rows)
    config: dict[str, Any] = {"method": method, "split": split, "limit": limit}

    train_seconds = trainable = None
    t0 = time.perf_counter()
    if family == "classification":
        if train_rows is None:
            train_rows = load_split(task, task.train_split).to_list()
        train_rows = list(train_rows[:max_train] if max_train else train_rows)
        config.update({"train_split": task.train_split, "n_train": len(train_rows)})
        if method == "majority":
            label = majority_label(train_rows)
            labels = [label] * len(eval_rows)
        else:
            model = fit_tfidf_lr(train_rows, seed)
            train_seconds = time.perf_counter() - t0
            lr = model[-1]
            trainable = int(lr.coef_.size + lr.intercept_.size)
            config.update({"ngram_range": [1, 2], "sublinear_tf": True, "C": 10.0})
            t0 = time.perf_counter()
            labels = [int(x) for x in model.predict([r["text"] for r in eval_rows])]
        predictions = [task.label_names[c] for c in labels]
        references = [[task.label_names[r["label"]]] for r in eval_rows]
    elif family == "summarization":
        k = LEAD_K.get(task.name, 3)
        config["k"] = k
        predictions = [lead_k(r["source"], k) for r in eval_rows]
        references = [list(r["references"]) for r in eval_rows]
    elif family == "translation":
        predictions = [r["source"] for r in eval_rows]
        references = [list(r["references"]) for r in eval_rows]
    else:
        pick = best_sentence_span if method == "best-sentence-span" else best_sentence
        predictions = [pick(r["question"], r["context"]) for r in eval_rows]
        references = [list(r["answers"]["text"]) for r in eval_rows]
    eval_seconds = time.perf_counter() - t0

    rows = [{"id": r["id"], "prediction": p, "references": refs, "scores": example_scores(task, p, refs)}
            for r, p, refs in zip(eval_rows, predictions, references)]
    return BaselineResult(task, method, split, compute_metrics(task, predictions, references), rows, config,
                          train_seconds, eval_seconds, trainable)


def write_baseline_run(result: BaselineResult, runs_dir: Any = None) -> Path:
    """Predictions JSONL + run record (method `baseline-<method>`, model path 'none'); returns the record path."""
    from tasks.records import (DEFAULT_RUNS_DIR, make_record, peak_memory_mb, record_name, repo_relative,
                               write_predictions, write_record)

    record = make_record(
        task=result.task, method=f"baseline-{result.method}", model_path="none", split=result.split,
        n_examples=len(result.rows), metrics=result.metrics, predictions=None, seed=result.config.get("seed", 0),
        config=result.config, trainable_params=result.trainable_params, train_seconds=result.train_seconds,
        eval_seconds=result.eval_seconds, peak_memory_mb=peak_memory_mb(),
    )
    out_dir = Path(runs_dir or DEFAULT_RUNS_DIR)
    pred_path = out_dir / record_name(record).replace(".json", ".predictions.jsonl")
    write_predictions(result.rows, pred_path)
    record["predictions"] = repo_relative(pred_path)
    return write_record(record, out_dir / record_name(record))
