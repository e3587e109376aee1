"""Zero- and few-shot prompting of any `LM` on every prompted task: seeded demos, prompts that fit, scoring,
calibration. What differs between kinds (templates, demo strata, answer room, scoring) is asked of the kind.

Prompt = k demonstrations (input + answer, from the spec's `prompt`) joined by a blank line, then the evaluated
input. One fixed set of demos per (task, seed), drawn from the task's train split (class-balanced when the kind
gives demo strata) and never from the evaluated split, so every prompt starts with the same text and the model
runs that shared prefix once.

Fitting into the model's window (`lm.max_length`), per example: the prompt plus the room the answer needs
(`kind.answer_room`: the longest label verbalizer, or `max_target_tokens` for generation) must fit. If it does
not, demos are dropped from the end (the remaining ones stay a shared prefix) and the number dropped is
recorded; if the evaluated input alone is still too long, its document (`kind.document_field`) is cut to the
longest prefix of whole words that fits and the number of words cut is recorded. Nothing is silently truncated.

Kinds that rank labels (classification) rank them by every rule they have (the summed log-likelihood, lm-eval's
`acc`, which gives `prediction` and the spec's metrics; and per answer byte, lm-eval's `acc_norm`, reported as
`accuracy_norm`); the record's `config["scoring"]` names the rule of each metric. Contextual calibration (Zhao et
al. 2021), for those kinds: the kind divides out, rule by rule, the label bias it measures on the content-free
inputs "N/A", "" and "[MASK]" under the same demos.

A record's `shots` is the k asked for; `details["fewshot"]` says how many demos the prompts really held
(`demos_used_min/max/mean`, and `shots_used`, the most common count).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.data.load import load_rows
from tasks.data.registry import spec_fields
from tasks.data.spec import TaskSpec
from tasks.errors import DataError, MethodError, TaskError
from tasks.evaluation.metrics import compute_metrics, example_scores
from tasks.evaluation.predict import eval_rows as reported_rows
from tasks.evaluation.records import config_hash, example_row, new_record, peak_memory_mb, write_run as write_record_run
from tasks.kinds import Prompted, TaskKind, get_kind
from tasks.models.lm import LM

DEMO_SEPARATOR = "\n\n"
CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")
TRUNCATION_RULE = (
    "drop demos from the end until prompt + answer room fits n_positions; if no demo is left and it still "
    "does not fit, keep the longest whole-word prefix of the evaluated document that fits"
)


def prompted_kind(spec: TaskSpec) -> TaskKind:
    """The spec's kind, which must be one that prompting applies to."""
    kind = get_kind(spec.kind)
    if not kind.prompting:
        raise MethodError(f"zero/few-shot prompting does not apply to {spec.name!r} ({kind.name} tasks)")
    return kind


# ---- demonstrations --------------------------------------------------------------------------------------


def sample_demos(spec: TaskSpec, train_rows: Sequence[dict[str, Any]], k: int, seed: int) -> list[dict[str, Any]]:
    """k demonstrations from `train_rows`, reproducible from `seed`.

    When the kind gives demo strata (classification: the label): balanced over the strata (k // S each, the
    remaining k % S go to distinct strata picked by the seeded generator), then shuffled so that labels do not
    come in blocks. Otherwise: k distinct rows.
    """
    kind = get_kind(spec.kind)
    if k < 0:
        raise MethodError(f"shots must be >= 0, got {k}")
    if k > len(train_rows):
        raise TaskError(
            f"{k} shots asked but the {spec.name} train split has only {len(train_rows)} examples; use fewer shots"
        )
    rng = random.Random(f"{spec.name}:{seed}")
    strata = kind.demo_strata(spec, list(train_rows)) if k > 0 else None
    if strata is None:
        return [train_rows[i] for i in rng.sample(range(len(train_rows)), k)]
    by_stratum: dict[Any, list[int]] = {}
    for i, s in enumerate(strata):
        by_stratum.setdefault(s, []).append(i)
    order = sorted(by_stratum)
    counts = {s: k // len(order) for s in order}
    for s in rng.sample(order, k % len(order)):
        counts[s] += 1
    picked: list[int] = []
    for s in order:
        if counts[s] > len(by_stratum[s]):
            name = kind.references(spec, train_rows[by_stratum[s][0]])[0]
            raise TaskError(
                f"{k} class-balanced shots need {counts[s]} examples of label {name!r} but the "
                f"{spec.name} train split has {len(by_stratum[s])}; use fewer shots"
            )
        picked += rng.sample(by_stratum[s], counts[s])
    rng.shuffle(picked)
    return [train_rows[i] for i in picked]


def demo_text(spec: TaskSpec, row: dict[str, Any]) -> str:
    """One demonstration: the input prompt followed by its gold answer."""
    kind = get_kind(spec.kind)
    return kind.render_input(spec, row) + kind.render_answer(spec, row)


# ---- prompts that fit ------------------------------------------------------------------------------------


@dataclass
class Prompt:
    context: str
    demos_used: int
    demos_dropped: int
    words_truncated: int


def build_prompt(spec: TaskSpec, lm: LM, demo_texts: Sequence[str], row: dict[str, Any], reserve: int) -> Prompt:
    """The longest prompt (all demos first) whose tokens + `reserve` answer tokens fit `lm.max_length`."""
    kind = get_kind(spec.kind)
    prefix = spec.prompt.instruction
    prefix = prefix + DEMO_SEPARATOR if prefix else ""
    query = kind.render_input(spec, row)
    for n in range(len(demo_texts), -1, -1):
        context = prefix + "".join(d + DEMO_SEPARATOR for d in demo_texts[:n]) + query
        if lm.token_count(context) + reserve <= lm.max_length:
            return Prompt(context, n, len(demo_texts) - n, 0)
    too_long = MethodError(
        f"{spec.name} example {row.get('id')!r}: the prompt template alone plus {reserve} answer tokens exceeds "
        f"the model's n_positions={lm.max_length}; use a model with a longer window")
    key = kind.document_field
    if key is None:
        raise too_long
    # Not even the bare input fits: cut the document to the longest whole-word prefix that does.
    words = row[key].split()
    lo, hi = 0, len(words)  # invariant: keeping `lo` words fits (checked below), `hi + 1` does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        cut = prefix + kind.render_input(spec, {**row, key: " ".join(words[:mid])})
        if lm.token_count(cut) + reserve <= lm.max_length:
            lo = mid
        else:
            hi = mid - 1
    context = prefix + kind.render_input(spec, {**row, key: " ".join(words[:lo])})
    if lm.token_count(context) + reserve > lm.max_length:
        raise too_long
    return Prompt(context, 0, len(demo_texts), len(words) - lo)


# ---- running ---------------------------------------------------------------------------------------------


@dataclass
class FewShotResult:
    task: TaskSpec
    shots: int
    seed: int
    split: str
    calibrate: bool
    metrics: dict[str, float]
    rows: list[dict[str, Any]]  # example_row layout; details: demos_used, demos_dropped, words_truncated, ...
    demo_ids: list[str]
    eval_seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        base = "zero-shot" if self.shots == 0 else "few-shot"
        return base + ("-calibrated" if self.calibrate else "")


def _grouped(prompts: list[Prompt], fn: Callable[[list[str]], Prompted]) -> Prompted:
    """`fn` over groups of prompts with the same number of demos, answers in the original order: each group
    shares its demos as a prefix that the LM runs once (one mixed call would share only the shortest)."""
    predictions: list[Any] = [None] * len(prompts)
    scores: list[Any] = [None] * len(prompts)
    ranked = False
    for n in sorted({p.demos_used for p in prompts}, reverse=True):
        idx = [i for i, p in enumerate(prompts) if p.demos_used == n]
        out = fn([prompts[i].context for i in idx])
        ranked = out.label_scores is not None
        for j, i in enumerate(idx):
            predictions[i] = out.predictions[j]
            scores[i] = out.label_scores[j] if ranked else None
    return Prompted(predictions, scores if ranked else None)


def run_fewshot(
    lm: LM,
    task: TaskSpec,
    shots: int,
    seed: int = 0,
    limit: int | None = None,
    calibrate: bool = False,
    split: str | None = None,
    train_rows: Sequence[dict[str, Any]] | None = None,
    eval_rows: Sequence[dict[str, Any]] | None = None,
) -> FewShotResult:
    """Prompt `lm` with `shots` demos on `task`'s evaluated split (the first `limit` examples of its fixed shuffle,
    or of `eval_rows` when given) and score it.

    `train_rows` defaults to `load_rows(task, task.train_split)`, `eval_rows` to the evaluated split's rows.
    """
    spec = task
    kind = prompted_kind(spec)
    split = split or spec.eval_split
    if split == spec.train_split:
        raise TaskError(f"{spec.name}: demos come from the {split!r} split, so it cannot also be the evaluated split")
    if calibrate and not kind.calibrates:
        raise MethodError(f"--calibrate applies to kinds that rank labels (classification tasks only); "
                          f"{spec.name} is {kind.name}")
    if shots < 0:
        raise MethodError(f"shots must be >= 0, got {shots}")
    if limit is not None and limit < 1:
        raise MethodError(f"limit must be >= 1, got {limit}")
    if eval_rows is None:  # the rows the leaderboard and `gpt2suite eval` score: a fixed shuffle's first `limit`
        eval_rows = reported_rows(spec, split, limit).to_list()
    else:
        eval_rows = list(eval_rows[:limit] if limit else eval_rows)
    if not eval_rows:
        raise DataError(f"{spec.name}: nothing to evaluate (the {split!r} rows are empty)")
    if shots > 0 and train_rows is None:
        train_rows = load_rows(spec, spec.train_split)
    demos = sample_demos(spec, train_rows or [], shots, seed)
    demo_texts = [demo_text(spec, d) for d in demos]

    reserve = kind.answer_room(spec, lm)
    prompts = [build_prompt(spec, lm, demo_texts, r, reserve) for r in eval_rows]

    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    answered = _grouped(prompts, lambda contexts: kind.answer_prompts(spec, lm, contexts))
    ranked = None
    if answered.label_scores is not None:  # a kind that ranks labels: every rule it ranks them by, calibrated or not
        cf_contexts = None
        if calibrate:
            cf_rows = [{"id": f"content-free-{i}", kind.document_field: t} for i, t in enumerate(CONTENT_FREE_INPUTS)]
            cf_contexts = [build_prompt(spec, lm, demo_texts, r, reserve).context for r in cf_rows]
        ranked = answered = kind.rank_labels(spec, lm, answered.label_scores, cf_contexts)
        if calibrate:
            info["content_free_label_probs"] = ranked.content_free_probs
    eval_seconds = time.perf_counter() - t0

    predictions = answered.predictions
    refs = [kind.references(spec, r) for r in eval_rows]
    rows = []
    for i, (r, p, pred, ref) in enumerate(zip(eval_rows, prompts, predictions, refs)):
        details: dict[str, Any] = {"demos_used": p.demos_used, "demos_dropped": p.demos_dropped,
                                   "words_truncated": p.words_truncated}
        if ranked is not None:
            details.update(ranked.details(i))
            scores = ranked.example_scores(spec, i, ref)
        else:
            scores = example_scores(spec.metrics, pred, ref)
        rows.append(example_row(r["id"], pred, ref, scores, details))
    used = Counter(p.demos_used for p in prompts)
    info.update({
        "examples_with_dropped_demos": sum(p.demos_dropped > 0 for p in prompts),
        "demos_dropped_total": sum(p.demos_dropped for p in prompts),
        "examples_truncated": sum(p.words_truncated > 0 for p in prompts),
        # `shots` is the k asked for; these say how many demos the prompts really held (fewer when they did not fit)
        "demos_used_min": min(used), "demos_used_max": max(used),
        "demos_used_mean": sum(n * c for n, c in used.items()) / len(prompts),
        "shots_used": max(used, key=lambda n: (used[n], n)),  # the most common count (the larger one on a tie)
    })
    if ranked is not None:
        metrics = ranked.metrics(spec, refs)
    else:
        metrics = compute_metrics(spec.metrics, predictions, refs, spec.label_names)
    return FewShotResult(spec, shots, seed, split, calibrate, metrics, rows, [d["id"] for d in demos], eval_seconds,
                         info)


def run_config(result: FewShotResult, limit: int | None) -> dict[str, Any]:
    """Everything that defines a few-shot run (goes into the record's `config`, and so into its hash)."""
    spec = result.task
    kind = get_kind(spec.kind)
    return {
        "shots": result.shots, "seed": result.seed, "split": result.split, "limit": limit,
        "calibrate": result.calibrate, "task_config_hash": config_hash(spec_fields(spec)), "template": spec.prompt,
        "demo_separator": DEMO_SEPARATOR, "demo_ids": result.demo_ids, "demo_source_split": spec.train_split,
        "demo_sampler": "class-balanced, seeded" if kind.demo_strata(spec, []) is not None else "uniform, seeded",
        "scoring": kind.prompt_scoring(spec),
        "content_free_inputs": list(CONTENT_FREE_INPUTS) if result.calibrate else None,
        "truncation_rule": TRUNCATION_RULE,
    }


def write_run(result: FewShotResult, model_path: str, limit: int | None, runs_dir: Any = None,
              total_params: int | None = None, extra: dict[str, Any] | None = None) -> Any:
    """The run record (details: `fewshot` counts, plus `extra`) and its per-example rows; returns the record path."""
    record = new_record(
        result.task, result.method, model_path, split=result.split, metrics=result.metrics,
        n_examples=len(result.rows), seed=result.seed, config=run_config(result, limit), shots=result.shots,
        trainable_params=0, total_params=total_params, eval_seconds=result.eval_seconds,
        peak_memory_mb=peak_memory_mb(), details={"fewshot": result.info, **(extra or {})},
    )
    return write_record_run(record, result.rows, runs_dir)
