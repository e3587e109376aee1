"""The leaderboard's rows: one per (model, task, method, shots, metric), with a bootstrap interval, and a paired
test against the task's best row on its primary metric.

A row of several seeds reports the mean over its runs (value, seconds, memory) and resamples the examples all its
runs scored (the statistic is the mean over runs). The row of a task scored as a whole text (its kind's
`scores_text`: the perplexity row) is one document: no interval and no test; `n` is the number of tokens scored.
Which way is better comes from the metric registry; the primary metric from the task's spec.
"""

from __future__ import annotations

from typing import Any

from tasks.leaderboard.result import LeaderboardResult
from tasks.leaderboard.tasks_api import (Run, RunRecord, bootstrap, get_task, higher_is_better, repo_relative,
                                         scores_text, task_metrics)

COLUMNS = ("model", "task", "method", "shots", "metric", "value", "ci_low", "ci_high", "n", "budget",
           "trainable_params", "train_seconds", "eval_seconds", "peak_memory_mb", "record", "below_best", "p_value")


def budget(record: RunRecord) -> str:
    """What the row was given, in words: fine-tuning steps x batch and training examples, the baseline's training
    rows, the perplexity window; prompting trains nothing (its shots are in the method label)."""
    cfg, details = record.config or {}, record.details or {}
    training = details.get("training") if isinstance(details, dict) else None
    if isinstance(training, dict):
        batch = int(cfg.get("batch_size") or 0) * int(cfg.get("grad_accum") or 1) * int(cfg.get("world_size") or 1)
        return (f"{training.get('global_steps')} steps x {batch}, {cfg.get('train_examples'):,} train / "
                f"{cfg.get('val_examples_used')} val")
    if "max_len" in cfg and "stride" in cfg:
        chars = f", {cfg['chars']:,} chars" if cfg.get("chars") else ""
        return f"window {cfg['max_len']}, stride {cfg['stride']}{chars}"
    if cfg.get("n_train"):
        return f"fit on {cfg['n_train']:,} train"
    return "no training"


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _tokens(record: RunRecord) -> Any:
    counts = record.details.get("counts") if isinstance(record.details, dict) else None
    return counts.get("tokens") if isinstance(counts, dict) else None


def _shots(shots: Any, members: list[Any]) -> Any:
    """k, or "k, n used" when the row's prompts held fewer demos than asked (they did not fit the window): the
    method label then reads "few-shot (k=4, 0 used)". n is the records' `shots_used` (a range over seeds)."""
    used = sorted({d["fewshot"].get("shots_used") for d in (s.record.details for s in members)
                   if isinstance(d, dict) and isinstance(d.get("fewshot"), dict)} - {None})
    if not shots or not used or used == [shots]:
        return shots
    return f"{shots}, {used[0] if len(used) == 1 else f'{used[0]}-{used[-1]}'} used"


def _safe(fn: Any, *args: Any) -> Any:
    """An interval or test, or None when the predictions cannot be resampled (the row still shows its value)."""
    try:
        return fn(*args)
    except (KeyError, ValueError, TypeError) as e:
        print(f"warning: no bootstrap for {args[0].name} {args[1]}: {type(e).__name__}: {e}")
        return None


def build_rows(result: LeaderboardResult) -> list[dict[str, Any]]:
    """The leaderboard's rows (COLUMNS, plus `_`-prefixed fields for rendering), task by task, best first."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for s in result.cells:
        if s.record is None:
            continue
        key = (s.cell.model, s.cell.task, s.cell.method.row_method, s.cell.method.shots)
        groups.setdefault(key, []).append(s)

    by_task: dict[str, list[dict[str, Any]]] = {}
    for (model, task, method, shots), members in groups.items():
        runs = [Run.from_rows(s.rows) for s in members if s.rows]
        first = members[0].record
        shots = _shots(shots, members)
        spec = get_task(task)
        whole_text = scores_text(spec)
        records = ";".join(repo_relative(s.path) for s in members)
        for metric in task_metrics(task, first):
            value = _mean([s.record.metrics.get(metric) for s in members])
            ci = _safe(bootstrap.confidence_interval, spec, metric, runs) if runs and not whole_text else None
            n = ci.n if ci else (_tokens(first) if whole_text else first.n_examples)
            by_task.setdefault(task, []).append({
                "model": model, "task": task, "method": method, "shots": shots, "metric": metric, "value": value,
                "ci_low": ci.low if ci else None, "ci_high": ci.high if ci else None, "n": n,
                "budget": budget(first), "trainable_params": first.trainable_params,
                "train_seconds": _mean([s.record.train_seconds for s in members]),
                "eval_seconds": _mean([s.record.eval_seconds for s in members]),
                "peak_memory_mb": _mean([s.record.peak_memory_mb for s in members]),
                "record": records, "below_best": None, "p_value": None,
                "_primary": metric == spec.primary_metric, "_whole_text": whole_text, "_runs": runs,
                "_seeds": [s.cell.seed for s in members],
                "_ci_resamples": ci.resamples if ci else None, "_group": (model, method, shots),
                "_records": [s.path for s in members],
            })

    out: list[dict[str, Any]] = []
    for task in result.config.tasks:
        rows = by_task.get(task, [])
        primary_rows = [r for r in rows if r["_primary"] and r["value"] is not None]
        spec = get_task(task)
        metric = spec.primary_metric
        order = sorted(primary_rows, key=lambda r: r["value"], reverse=higher_is_better(metric))
        if order:
            best = order[0]
            best["below_best"] = False
            for r in order[1:]:
                test = (_safe(bootstrap.paired_test, spec, metric, best["_runs"], r["_runs"])
                        if not r["_whole_text"] and best["_runs"] and r["_runs"] else None)
                if test is not None:
                    r["p_value"] = test.p_value
                    r["below_best"] = test.p_value < bootstrap.ALPHA
        rank = {r["_group"]: i for i, r in enumerate(order)}
        rows.sort(key=lambda r: (rank.get(r["_group"], len(rank)), not r["_primary"]))
        for r in rows:
            r["_rank"] = rank.get(r["_group"])
        out.extend(rows)
    return out
