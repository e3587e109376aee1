"""Classic baselines: predictions that go through the same metrics and run-record path as the models.

A baseline is a rule in `BASELINES` (its name, the task kind it applies to, its parameters with their defaults,
and a function). A task runs the baselines its spec lists under `baselines:`, with the parameters given there:

| kind | baseline | rule | parameters |
|---|---|---|---|
| classification | `tfidf-lr` | TF-IDF of word 1-2-grams (sublinear tf) + logistic regression (scikit-learn) | `C` (10.0) |
| classification | `majority` | the most frequent train label, for every example | |
| conditional_generation | `lead-k` | the first k sentences of the document | `k` (3) |
| conditional_generation | `copy-source` | the source, unchanged | |
| extractive_qa | `best-sentence` | the context sentence with the most question unigrams (answer-normalised) | |
| extractive_qa | `best-sentence-span` | in that sentence, the longest run of consecutive words not in the question | |

Sentences are split after `.`, `!` or `?` followed by whitespace and an upper-case letter, digit or quote
(a regex; no model). Ties between sentences go to the earlier one. Question and sentence words are compared
after `normalize_answer` (lower case, no punctuation or articles).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt2core.typed_config import unknown_name
from tasks.data.load import load_rows
from tasks.data.spec import TaskSpec
from tasks.errors import DataError, MethodError
from tasks.evaluation.metrics import compute_metrics, example_scores, normalize_answer
from tasks.evaluation.predict import eval_rows as reported_rows
from tasks.evaluation.records import example_row, new_record, peak_memory_mb, write_run
from tasks.kinds import get_kind

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'“‘(\[])")

Rows = list[dict[str, Any]]


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


# ---- the rules ---------------------------------------------------------------------------------------------


def majority_label(train_rows: Sequence[dict[str, Any]]) -> int:
    """The most frequent label; ties go to the smaller label index (deterministic)."""
    counts = Counter(r["label"] for r in train_rows)
    return min(counts, key=lambda c: (-counts[c], c))


def fit_tfidf_lr(train_rows: Sequence[dict[str, Any]], seed: int = 0, C: float = 10.0) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(C=C, max_iter=2000, random_state=seed),
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


# ---- the registry ------------------------------------------------------------------------------------------


@dataclass
class Fitted:
    """What a rule returns: one prediction per evaluated row, plus what it adds to the run's config and cost."""

    predictions: list[str]
    config: dict[str, Any] = field(default_factory=dict)
    train_seconds: float | None = None
    trainable_params: int | None = None


# fn(spec, params, eval_rows, train_rows, seed) -> Fitted; train_rows is None unless the rule needs them.
RuleFn = Callable[[TaskSpec, dict[str, Any], Rows, Rows | None, int], Fitted]


@dataclass(frozen=True)
class Baseline:
    name: str
    kind: str  # the task kind it applies to (that kind lists it in `baselines`)
    fn: RuleFn
    params: dict[str, Any] = field(default_factory=dict)  # parameter -> default (a spec may override)
    needs_train: bool = False  # reads the train split


def _majority(spec: TaskSpec, params: dict[str, Any], rows: Rows, train: Rows | None, seed: int) -> Fitted:
    label = majority_label(train or [])
    return Fitted([spec.label_names[label]] * len(rows))


def _tfidf_lr(spec: TaskSpec, params: dict[str, Any], rows: Rows, train: Rows | None, seed: int) -> Fitted:
    t0 = time.perf_counter()
    model = fit_tfidf_lr(train or [], seed, C=float(params["C"]))
    train_seconds = time.perf_counter() - t0
    lr = model[-1]
    labels = [int(x) for x in model.predict([r["text"] for r in rows])]
    return Fitted([spec.label_names[c] for c in labels],
                  {"ngram_range": [1, 2], "sublinear_tf": True, "C": float(params["C"])},
                  train_seconds, int(lr.coef_.size + lr.intercept_.size))


def _lead_k(spec: TaskSpec, params: dict[str, Any], rows: Rows, train: Rows | None, seed: int) -> Fitted:
    k = int(params["k"])
    if k < 1:
        raise MethodError(f"{spec.name}: baselines.lead-k.k must be at least 1, got {k}")
    return Fitted([lead_k(r["source"], k) for r in rows], {"k": k})


def _copy_source(spec: TaskSpec, params: dict[str, Any], rows: Rows, train: Rows | None, seed: int) -> Fitted:
    return Fitted([r["source"] for r in rows])


def _best_sentence(spec: TaskSpec, params: dict[str, Any], rows: Rows, train: Rows | None, seed: int) -> Fitted:
    return Fitted([best_sentence(r["question"], r["context"]) for r in rows])


def _best_sentence_span(spec: TaskSpec, params: dict[str, Any], rows: Rows, train: Rows | None,
                        seed: int) -> Fitted:
    return Fitted([best_sentence_span(r["question"], r["context"]) for r in rows])


# In order of preference: a spec's default baseline is the first of these that it lists.
BASELINES: dict[str, Baseline] = {b.name: b for b in [
    Baseline("tfidf-lr", "classification", _tfidf_lr, {"C": 10.0}, needs_train=True),
    Baseline("majority", "classification", _majority, needs_train=True),
    Baseline("lead-k", "conditional_generation", _lead_k, {"k": 3}),
    Baseline("copy-source", "conditional_generation", _copy_source),
    Baseline("best-sentence", "extractive_qa", _best_sentence),
    Baseline("best-sentence-span", "extractive_qa", _best_sentence_span),
]}


def spec_baselines(spec: TaskSpec) -> list[str]:
    """The baselines `spec` lists, in the registry's order of preference (the first is the default)."""
    return [name for name in BASELINES if name in spec.baselines]


def baseline_params(spec: TaskSpec, name: str) -> dict[str, Any]:
    """The rule's parameters: its defaults, overridden by the spec's `baselines: {name: {...}}`."""
    rule = BASELINES[name]
    given = dict(spec.baselines.get(name) or {})
    for key in given:
        if not rule.params:
            raise MethodError(f"{spec.name}: baselines.{name}: the {name} baseline takes no parameters (got "
                              f"{', '.join(map(repr, given))}); write `{name}: {{}}`")
        if key not in rule.params:
            raise MethodError(str(unknown_name("parameter", key, rule.params, f"{spec.name}: baselines.{name}")))
    return {**rule.params, **given}


def get_baseline(spec: TaskSpec, name: str | None = None) -> Baseline:
    """The rule `name` (default: the spec's first listed baseline); it must be one the spec lists."""
    listed = spec_baselines(spec)
    if not listed:
        raise MethodError(f"{spec.name!r} lists no baselines ({get_kind(spec.kind).name} task; add a `baselines:` "
                          "mapping to its spec)")
    name = name or listed[0]
    if name not in BASELINES:
        raise MethodError(str(unknown_name("baseline", name, BASELINES)).rstrip(".") +
                          f"; {spec.name} lists {', '.join(listed)}")
    if name not in listed or get_kind(BASELINES[name].kind) is not get_kind(spec.kind):
        raise MethodError(f"baseline {name!r} does not apply to {spec.name} (its spec lists {', '.join(listed)}); "
                          f"choose one of those")
    return BASELINES[name]


# ---- running -----------------------------------------------------------------------------------------------


@dataclass
class BaselineResult:
    task: TaskSpec
    method: str
    split: str
    metrics: dict[str, float]
    rows: list[dict[str, Any]]  # example_row layout
    config: dict[str, Any]
    train_seconds: float | None = None
    eval_seconds: float = 0.0
    trainable_params: int | None = None
    seed: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def run_baseline(task: TaskSpec, method: str | None = None, split: str | None = None, limit: int | None = None,
                 seed: int = 0, max_train: int | None = None,
                 train_rows: Sequence[dict[str, Any]] | None = None,
                 eval_rows: Sequence[dict[str, Any]] | None = None) -> BaselineResult:
    """Run one baseline on `task`'s evaluated split (the first `limit` examples of its fixed shuffle, or of
    `eval_rows` when given). `method` defaults to the spec's
    first listed baseline; `max_train` keeps the first N train rows (rules that train)."""
    spec = task
    rule = get_baseline(spec, method)
    params = baseline_params(spec, rule.name)
    if limit is not None and limit < 1:
        raise MethodError(f"limit must be >= 1 (the first N examples; leave it out to score them all), got {limit}")
    if max_train is not None and max_train < 1:
        raise MethodError(f"max_train must be >= 1 (the first N train rows; leave it out to use them all), got "
                          f"{max_train}")
    split = split or spec.eval_split
    if eval_rows is None:  # the rows the leaderboard and `gpt2suite eval` score: a fixed shuffle's first `limit`
        eval_rows = reported_rows(spec, split, limit).to_list()
    else:
        eval_rows = list(eval_rows[:limit] if limit else eval_rows)
    if not eval_rows:
        raise DataError(f"{spec.name}: nothing to evaluate (the {split!r} rows are empty)")
    config: dict[str, Any] = {"method": rule.name, "split": split, "limit": limit}
    train = None
    if rule.needs_train:
        if train_rows is None:
            train_rows = load_rows(spec, spec.train_split)
        train = list(train_rows[:max_train] if max_train else train_rows)
        if not train:
            raise DataError(f"{spec.name}: baseline {rule.name!r} needs train rows; the {spec.train_split!r} rows "
                            "are empty")
        config.update({"train_split": spec.train_split, "n_train": len(train)})

    t0 = time.perf_counter()
    fitted = rule.fn(spec, params, eval_rows, train, seed)
    eval_seconds = time.perf_counter() - t0 - (fitted.train_seconds or 0.0)
    config.update(fitted.config)

    kind = get_kind(spec.kind)
    references = [kind.references(spec, r) for r in eval_rows]
    rows = [example_row(r["id"], p, refs, example_scores(spec.metrics, p, refs))
            for r, p, refs in zip(eval_rows, fitted.predictions, references)]
    metrics = compute_metrics(spec.metrics, fitted.predictions, references, spec.label_names)
    return BaselineResult(spec, rule.name, split, metrics, rows, config, fitted.train_seconds, eval_seconds,
                          fitted.trainable_params, seed)


def write_baseline_run(result: BaselineResult, runs_dir: Any = None) -> Path:
    """The run record (method `baseline-<name>`, model path 'none') and its per-example rows; returns its path."""
    record = new_record(
        result.task, f"baseline-{result.method}", "none", split=result.split, metrics=result.metrics,
        n_examples=len(result.rows), seed=result.config.get("seed", result.seed), config=result.config,
        trainable_params=result.trainable_params, train_seconds=result.train_seconds,
        eval_seconds=result.eval_seconds, peak_memory_mb=peak_memory_mb(),
    )
    return write_run(record, result.rows, runs_dir)
