"""How the rendered files word things: number formats, method labels, the header lines and the method notes."""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

from tasks.leaderboard.result import LeaderboardResult
from tasks.leaderboard.tasks_api import bootstrap, get_task, higher_is_better, metric_label, scores_text

BELOW = "▼"

METHOD_NOTES = [
    "Each task's methods are scored on the same examples (the first `max_eval_examples` of a seed-0 shuffle of "
    "the eval split). Rows of several seeds show the mean over seeds.",
    f"95% CI: percentile bootstrap over examples, {bootstrap.RESAMPLES} resamples (seeded); BLEU/chrF and F1 are "
    "recomputed as corpus metrics on each resample (sacreBLEU sufficient statistics / confusion counts); any "
    f"other corpus metric through `compute_metrics` with {bootstrap.FALLBACK_RESAMPLES} resamples.",
    f"{BELOW}: significantly below the task's best row on its primary metric (one-sided paired bootstrap over the "
    f"examples both rows scored, {bootstrap.RESAMPLES} resamples, p < {bootstrap.ALPHA}).",
]


def method_notes(result: LeaderboardResult) -> list[str]:
    """METHOD_NOTES, then one line per task of the config that is scored as a whole text."""
    out = list(METHOD_NOTES)
    rules: dict[str, str] = {}  # how prompted rows answered, from their records (each metric's rule)
    for cell in result.cells:
        scoring = (cell.record.config or {}).get("scoring") if cell.record is not None else None
        if isinstance(scoring, dict):
            for metric, rule in scoring.items():
                rules.setdefault(metric_label(metric), str(rule))
        elif isinstance(scoring, str):
            rules.setdefault("generated answers", scoring)
    if rules:
        out.append("zero-/few-shot rows: " + "; ".join(f"{m} = {r}" for m, r in rules.items()) + ".")
    for task in result.config.tasks:
        if scores_text(task):
            spec = get_task(task)
            m = spec.primary_metric
            out.append(f"{task}: {metric_label(m)} ({'higher' if higher_is_better(m) else 'lower'} is better) of "
                       f"its {spec.eval_split} split read as one document, so no interval or test.")
    return out


def digits(metric: str) -> int:
    """Decimals a value is shown with: 2 on the 0-100 scale (higher is better); 4 for the others (bits per byte,
    perplexities), whose differences are small."""
    return 2 if higher_is_better(metric) else 4


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.{digits}f}"
    return str(value)


def value_label(r: dict[str, Any]) -> str:
    return fmt(r["value"], digits(r["metric"]))


def ci_label(r: dict[str, Any]) -> str:
    """The 95% interval as "[low, high]", with as many decimals as the value."""
    if r["ci_low"] is None:
        return ""
    d = digits(r["metric"])
    return f"[{fmt(r['ci_low'], d)}, {fmt(r['ci_high'], d)}]"


def sig_label(r: dict[str, Any]) -> str:
    """The "vs best" cell: best, "▼ p=..." (significantly below the task's best row), "p=..." or nothing."""
    if r["_rank"] == 0:
        return "best"
    if r["p_value"] is None:
        return ""
    return f"{BELOW} p={r['p_value']:.3f}" if r["below_best"] else f"p={r['p_value']:.3f}"


def method_label(r: dict[str, Any]) -> str:
    shots = r["shots"]
    return r["method"] + (f" (k={shots})" if r["method"].startswith("few-shot") and shots is not None else "")


def params_label(n: Any) -> str:
    if n is None:
        return ""
    n = int(n)
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def _costs(result: LeaderboardResult) -> tuple[float, int, int]:
    total = 0.0
    for s in result.cells:
        if s.record is not None:
            total += (s.record.train_seconds or 0) + (s.record.eval_seconds or 0)
    return total, result.count("ran"), result.count("cached")


def header_lines(result: LeaderboardResult, command: str | None) -> list[str]:
    total, ran, cached = _costs(result)
    cfg = result.config
    lines = [
        f"Config: `{cfg.source}`" + (f" ({cfg.description})" if cfg.description else ""),
        f"Command: `{command or 'gpt2suite leaderboard --config ' + cfg.source}`",
        f"Generated {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}; this invocation ran {ran} "
        f"cells and reused {cached} ({result.wall_seconds:.0f} s wall); the records' train + eval time adds up to "
        f"{total:.0f} s.",
    ]
    return lines
