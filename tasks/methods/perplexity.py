"""The language-modelling row: perplexity and bits per byte of a whole document through `LM.loglikelihood_rolling`.

Any spec of a kind that `scores_text` has such a row. Its split is read whole (`load_text`, e.g. a tokenised
corpus as published, escapes and blank lines included) and scored by the kind's `score_text` as one document
in windows of `max_len` tokens advancing by `stride` (every token predicted once, with >= max_len - stride
tokens of context; the first token is conditioned on end-of-text). The kind reports token and word perplexity
and bits per byte; the record carries the counts behind them under `details`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.data.load import load_text
from tasks.data.registry import available_tasks, get_task
from tasks.data.spec import TaskSpec
from tasks.errors import MethodError, TaskError
from tasks.evaluation.records import new_record, peak_memory_mb, write_run
from tasks.kinds import TaskKind, get_kind
from tasks.models.lm import LM

SCORING = "rolling windows, first token conditioned on end-of-text"
COUNTS = ("nll", "tokens", "words", "bytes")


def text_kind(spec: TaskSpec) -> TaskKind:
    """The spec's kind, which must score whole documents."""
    kind = get_kind(spec.kind)
    if not kind.scores_text:
        raise MethodError(f"perplexity applies to tasks that score whole documents; {spec.name!r} is a "
                          f"{kind.name} task")
    return kind


def default_text_task() -> TaskSpec:
    """The first task spec (in `available_tasks` order) of a kind that scores whole documents."""
    for name in available_tasks():
        spec = get_task(name)
        if get_kind(spec.kind).scores_text:
            return spec
    raise TaskError("no task spec scores whole documents (a kind with `scores_text`); add one to tasks/specs")


@dataclass
class PerplexityResult:
    task: TaskSpec
    split: str
    scores: dict[str, Any]  # the kind's score_text: metrics, counts, max_len, stride, chars, eval_seconds

    @property
    def metrics(self) -> dict[str, float]:
        return {m: self.scores[m] for m in self.task.metrics}


STRIDE_RULE = "max_len // 2"  # the one default, for the command line and the leaderboard (part of cache keys)


def default_stride(max_len: int) -> int:
    return max(1, max_len // 2)


def evaluate_perplexity(lm: LM, task: str | TaskSpec | None = None, *, max_len: int | None = None,
                        stride: int | None = None, split: str | None = None, max_chars: int | None = None,
                        data_dir: str | os.PathLike | None = None) -> PerplexityResult:
    """Perplexities and bits per byte of `task`'s `split` (default: its eval split; the first `max_chars`
    characters if given). `task` defaults to `default_text_task()`; `max_len` to the LM's window, `stride` to
    `default_stride(max_len)` (half a window: every token after the first window has >= max_len/2 of context)."""
    spec = get_task(task) if task is not None else default_text_task()
    kind = text_kind(spec)
    max_len = max_len or lm.max_length
    stride = stride or default_stride(max_len)
    if not 0 < max_len <= lm.max_length:
        raise MethodError(f"max_len must be in [1, {lm.max_length}] (the model's n_positions), got {max_len}")
    if not 0 < stride <= max_len:
        raise MethodError(f"stride must be in [1, max_len={max_len}], got {stride}")
    if max_chars is not None and max_chars < 1:
        raise MethodError(f"max_chars must be >= 1, got {max_chars}")
    split = split or spec.eval_split
    text = load_text(spec, split, data_dir)
    if max_chars is not None:
        text = text[:max_chars]
    return PerplexityResult(spec, split, kind.score_text(lm, text, max_len, stride))


def write_perplexity_run(result: PerplexityResult, model_path: str, runs_dir: Any = None,
                         total_params: int | None = None) -> Path:
    """The run record of the language-modelling row (no per-example rows); returns its path."""
    s = result.scores
    config = {"split": result.split, "max_len": s["max_len"], "stride": s["stride"], "chars": s["chars"],
              "scoring": SCORING}
    record = new_record(result.task, "perplexity", model_path, split=result.split, metrics=result.metrics,
                        n_examples=1, seed=None, config=config, total_params=total_params,
                        eval_seconds=s["eval_seconds"], peak_memory_mb=peak_memory_mb(), tokens_seen=s["tokens"],
                        details={"counts": {k: s[k] for k in COUNTS}})
    return write_run(record, None, runs_dir)
