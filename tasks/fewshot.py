"""Zero- and few-shot prompting of any `LM` on every task: seeded demos, prompts that fit, scoring, calibration.

Prompt = k demonstrations (input + answer, from `TaskSpec.prompt`) joined by a blank line, then the evaluated
input. One fixed set of demos per (task, seed), drawn from the task's train split (class-balanced for
classification) and never from the evaluated split, so every prompt starts with the same text and the model
runs that shared prefix once.

Fitting into the model's window (`lm.max_length`), per example: the prompt plus the room the answer needs
(the longest label verbalizer, or `max_target_tokens` for generation) must fit. If it does not, demos are
dropped from the end (the remaining ones stay a shared prefix) and the number dropped is recorded; if the
evaluated input alone is still too long, its document (`text` / `context` / `source`) is cut to the longest
prefix of whole words that fits and the number of words cut is recorded. Nothing is silently truncated.

Classification ranks the label verbalizers by their mean log-probability per token (length-normalized).
Contextual calibration (Zhao et al. 2021) turns those scores into a distribution over labels (softmax),
estimates the model's label bias as the mean distribution for the content-free inputs "N/A", "" and "[MASK]"
under the same demos, and divides it out. Generation tasks decode greedily until a newline.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.lm_eval import LM
from tasks.metrics import compute_metrics, example_scores
from tasks.registry import TaskError, TaskSpec

DEMO_SEPARATOR = "\n\n"
CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")
STOP_SEQUENCES = ("\n",)
SCORING = "mean log-probability per continuation token (length-normalized)"
TRUNCATION_RULE = (
    "drop demos from the end until prompt + answer room fits n_positions; if no demo is left and it still "
    "does not fit, keep the longest whole-word prefix of the evaluated document that fits"
)
_DOCUMENT_FIELD = {"classification": "text", "qa": "context", "generation": "source"}


# ---- templates -------------------------------------------------------------------------------------------


def render_input(task: TaskSpec, row: dict[str, Any]) -> str:
    """The prompt for one example, ending where the answer begins (e.g. 'Review: ...\\nSentiment:')."""
    template = task.prompt["input"]
    if task.kind == "classification":
        return template.format(text=row["text"])
    if task.kind == "qa":
        return template.format(context=row["context"], question=row["question"])
    return template.format(source=row["source"])


def render_answer(task: TaskSpec, row: dict[str, Any]) -> str:
    """The gold answer as it follows the input in a demonstration (with its leading space)."""
    template = task.prompt["answer"]
    if task.kind == "classification":
        return template.format(label=task.label_names[row["label"]])
    if task.kind == "qa":
        return template.format(answer=row["answers"]["text"][0])
    return template.format(target=row["references"][0])


def verbalizers(task: TaskSpec) -> list[str]:
    """The continuation scored for each label (label_names through the answer template)."""
    return [task.prompt["answer"].format(label=name) for name in task.label_names]


def references(task: TaskSpec, row: dict[str, Any]) -> list[str]:
    if task.kind == "classification":
        return [task.label_names[row["label"]]]
    if task.kind == "qa":
        return list(row["answers"]["text"])
    return list(row["references"])


# ---- demonstrations --------------------------------------------------------------------------------------


def sample_demos(task: TaskSpec, train_rows: Sequence[dict[str, Any]], k: int, seed: int) -> list[dict[str, Any]]:
    """k demonstrations from `train_rows`, reproducible from `seed`.

    Classification: class-balanced (k // C per class, the remaining k % C go to distinct classes picked by the
    seeded generator), then shuffled so that labels do not come in blocks. Other kinds: k distinct rows.
    """
    if k < 0:
        raise ValueError(f"shots must be >= 0, got {k}")
    if k > len(train_rows):
        raise TaskError(
            f"{k} shots asked but the {task.name} train split has only {len(train_rows)} examples; use fewer shots"
        )
    rng = random.Random(f"{task.name}:{seed}")
    if task.kind != "classification" or k == 0:
        return [train_rows[i] for i in rng.sample(range(len(train_rows)), k)]
    by_label: dict[int, list[int]] = {c: [] for c in range(len(task.label_names))}
    for i, r in enumerate(train_rows):
        by_label[r["label"]].append(i)
    n_classes = len(by_label)
    counts = {c: k // n_classes for c in by_label}
    for c in rng.sample(sorted(by_label), k % n_classes):
        counts[c] += 1
    picked: list[int] = []
    for c in sorted(by_label):
        if counts[c] > len(by_label[c]):
            raise TaskError(
                f"{k} class-balanced shots need {counts[c]} examples of label {task.label_names[c]!r} but the "
                f"{task.name} train split has {len(by_label[c])}; use fewer shots"
            )
        picked += rng.sample(by_label[c], counts[c])
    rng.shuffle(picked)
    return [train_rows[i] for i in picked]


# ---- prompts that fit ------------------------------------------------------------------------------------


@dataclass
class Prompt:
    context: str
    demos_used: int
    demos_dropped: int
    words_truncated: int


def build_prompt(task: TaskSpec, lm: LM, demo_texts: Sequence[str], row: dict[str, Any], reserve: int) -> Prompt:
    """The longest prompt (all demos first) whose tokens + `reserve` answer tokens fit `lm.max_length`."""
    prefix = task.prompt.get("instruction", "")
    prefix = prefix + DEMO_SEPARATOR if prefix else ""
    query = render_input(task, row)
    for n in range(len(demo_texts), -1, -1):
        context = prefix + "".join(d + DEMO_SEPARATOR for d in demo_texts[:n]) + query
        if lm.token_count(context) + reserve <= lm.max_length:
            return Prompt(context, n, len(demo_texts) - n, 0)
    # Not even the bare input fits: cut the document to the longest whole-word prefix that does.
    key = _DOCUMENT_FIELD[task.kind]
    words = row[key].split()
    lo, hi = 0, len(words)  # invariant: keeping `lo` words fits (checked below), `hi + 1` does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if lm.token_count(prefix + render_input(task, {**row, key: " ".join(words[:mid])})) + reserve <= lm.max_length:
            lo = mid
        else:
            hi = mid - 1
    context = prefix + render_input(task, {**row, key: " ".join(words[:lo])})
    if lm.token_count(context) + reserve > lm.max_length:
        raise ValueError(
            f"{task.name} example {row.get('id')!r}: the prompt template alone plus {reserve} answer tokens exceeds "
            f"the model's n_positions={lm.max_length}; use a model with a longer window"
        )
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
    rows: list[dict[str, Any]]  # per-example: id, prediction, references, scores, demos_dropped, ...
    demo_ids: list[str]
    eval_seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        base = "zero-shot" if self.shots == 0 else "few-shot"
        return base + ("-calibrated" if self.calibrate else "")


def _label_scores(lm: LM, contexts: list[str], conts: list[str], n_tokens: list[int]) -> list[list[float]]:
    """Length-normalized log-likelihood of every verbalizer after every context: (n_contexts, n_labels)."""
    requests = [(c, v) for c in contexts for v in conts]
    lls = lm.loglikelihood(requests)
    n = len(conts)
    return [[lls[i * n + j][0] / n_tokens[j] for j in range(n)] for i in range(len(contexts))]


def _softmax(xs: Sequence[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [x / s for x in e]


def _grouped(prompts: list[Prompt], fn: Callable[[list[Prompt]], list[Any]]) -> list[Any]:
    """`fn` over groups of prompts with the same number of demos, results in the original order: each group
    shares its demos as a prefix that the LM runs once (one mixed call would share only the shortest)."""
    out: list[Any] = [None] * len(prompts)
    for n in sorted({p.demos_used for p in prompts}, reverse=True):
        idx = [i for i, p in enumerate(prompts) if p.demos_used == n]
        for i, r in zip(idx, fn([prompts[i] for i in idx])):
            out[i] = r
    return out


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
    """Prompt `lm` with `shots` demos on `task`'s evaluated split (first `limit` examples) and score it.

    `train_rows` / `eval_rows` default to `load_split(task, task.train_split / split)`.
    """
    from tasks.registry import load_split

    split = split or task.eval_split
    if split == task.train_split:
        raise TaskError(f"{task.name}: demos come from the {split!r} split, so it cannot also be the evaluated split")
    if calibrate and task.kind != "classification":
        raise TaskError(f"--calibrate applies to classification tasks only; {task.name} is {task.kind}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if eval_rows is None:
        eval_rows = load_split(task, split).to_list()
    eval_rows = list(eval_rows[:limit] if limit else eval_rows)
    if shots > 0 and train_rows is None:
        train_rows = load_split(task, task.train_split).to_list()
    demos = sample_demos(task, train_rows or [], shots, seed)
    demo_texts = [render_input(task, d) + render_answer(task, d) for d in demos]

    if task.kind == "classification":
        conts = verbalizers(task)
        n_tokens = [max(1, lm.token_count(v)) for v in conts]
        reserve = max(n_tokens)
    else:
        conts, n_tokens, reserve = [], [], task.max_target_tokens
    prompts = [build_prompt(task, lm, demo_texts, r, reserve) for r in eval_rows]

    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    if task.kind == "classification":
        scores = _grouped(prompts, lambda group: _label_scores(lm, [p.context for p in group], conts, n_tokens))
        if calibrate:
            cf_rows = [{"text": t, "label": 0} for t in CONTENT_FREE_INPUTS]
            cf_prompts = [build_prompt(task, lm, demo_texts, r, reserve).context for r in cf_rows]
            cf_probs = [_softmax(s) for s in _label_scores(lm, cf_prompts, conts, n_tokens)]
            p_cf = [sum(p[j] for p in cf_probs) / len(cf_probs) for j in range(len(conts))]
            info["content_free_label_probs"] = dict(zip(task.label_names, p_cf))
            # softmax(s) / p_cf, renormalized: the argmax is that of log softmax(s) - log p_cf.
            scores = [[math.log(p) - math.log(q) for p, q in zip(_softmax(s), p_cf)] for s in scores]
        predictions = [task.label_names[max(range(len(s)), key=s.__getitem__)] for s in scores]
    else:
        gen = {"until": list(STOP_SEQUENCES), "max_gen_toks": task.max_target_tokens}
        outputs = _grouped(prompts, lambda group: lm.generate_until([(p.context, dict(gen)) for p in group]))
        predictions = [g.strip() for g in outputs]
        scores = None
    eval_seconds = time.perf_counter() - t0

    refs = [references(task, r) for r in eval_rows]
    rows = []
    for i, (r, p, pred, ref) in enumerate(zip(eval_rows, prompts, predictions, refs)):
        row = {"id": r["id"], "prediction": pred, "references": ref, "scores": example_scores(task, pred, ref),
               "demos_used": p.demos_used, "demos_dropped": p.demos_dropped, "words_truncated": p.words_truncated}
        if scores is not None:
            row["label_scores"] = dict(zip(task.label_names, scores[i]))
        rows.append(row)
    info.update({
        "examples_with_dropped_demos": sum(p.demos_dropped > 0 for p in prompts),
        "demos_dropped_total": sum(p.demos_dropped for p in prompts),
        "examples_truncated": sum(p.words_truncated > 0 for p in prompts),
    })
    return FewShotResult(task, shots, seed, split, calibrate, compute_metrics(task, predictions, refs), rows,
                         [d["id"] for d in demos], eval_seconds, info)


def run_config(result: FewShotResult, limit: int | None) -> dict[str, Any]:
    """Everything that defines a few-shot run (goes into the record's `config`, and so into its hash)."""
    from tasks.records import config_hash

    task = result.task
    task_fields = {"name": task.name, "version": task.version, "kind": task.kind, "prompt": task.prompt,
                   "label_names": task.label_names, "max_target_tokens": task.max_target_tokens}
    return {
        "shots": result.shots, "seed": result.seed, "split": result.split, "limit": limit,
        "calibrate": result.calibrate, "task_config_hash": config_hash(task_fields), "template": task.prompt,
        "demo_separator": DEMO_SEPARATOR, "demo_ids": result.demo_ids, "demo_source_split": task.train_split,
        "demo_sampler": "class-balanced, seeded" if task.kind == "classification" else "uniform, seeded",
        "scoring": SCORING if task.kind == "classification" else "greedy until " + repr(STOP_SEQUENCES[0]),
        "content_free_inputs": list(CONTENT_FREE_INPUTS) if result.calibrate else None,
        "truncation_rule": TRUNCATION_RULE,
    }


def write_run(result: FewShotResult, model_path: str, limit: int | None, runs_dir: Any = None,
              total_params: int | None = None, extra: dict[str, Any] | None = None) -> Any:
    """Write the per-example predictions JSONL and the run record (tasks.records); returns the record path."""
    from pathlib import Path

    from tasks.records import (DEFAULT_RUNS_DIR, make_record, peak_memory_mb, record_name, repo_relative,
                               write_predictions, write_record)

    record = make_record(
        task=result.task, method=result.method, model_path=model_path, split=result.split,
        n_examples=len(result.rows), metrics=result.metrics, predictions=None, seed=result.seed,
        config=run_config(result, limit), shots=result.shots, total_params=total_params, trainable_params=0,
        eval_seconds=result.eval_seconds, peak_memory_mb=peak_memory_mb(),
        extra={"fewshot": result.info, **(extra or {})},
    )
    out_dir = Path(runs_dir or DEFAULT_RUNS_DIR)
    pred_path = out_dir / record_name(record).replace(".json", ".predictions.jsonl")
    write_predictions(result.rows, pred_path)
    record["predictions"] = repo_relative(pred_path)
    return write_record(record, out_dir / record_name(record))
