"""The CSV (every metric of every row) and the Markdown page (a best-per-task summary, then each row's primary
metric, the method notes and what was skipped, failed or not run yet)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from tasks.leaderboard.render.rows import COLUMNS
from tasks.leaderboard.render.text import (BELOW, ci_label, fmt, header_lines, method_label, method_notes,
                                           params_label, sig_label, value_label)
from tasks.leaderboard.result import LeaderboardResult
from tasks.leaderboard.tasks_api import atomic_write_text, higher_is_better, metric_label


def _csv_value(col: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if col == "p_value" else f"{value:.4f}"
    return str(value)


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([_csv_value(c, r[c]) for c in COLUMNS])
    atomic_write_text(path, buf.getvalue())
    return path


def task_summary(rows: list[dict[str, Any]], tasks: list[str]) -> list[dict[str, Any]]:
    """Per task: its best row, its best classic baseline and its best row that uses the backbone (primary metric),
    and the margin of the backbone's best over the best baseline (positive: the backbone is ahead)."""
    out = []
    for task in tasks:
        ranked = sorted((r for r in rows if r["task"] == task and r["_primary"] and r["_rank"] is not None),
                        key=lambda r: r["_rank"])
        if not ranked:
            continue
        baseline = next((r for r in ranked if r["method"].startswith("baseline:")), None)
        backbone = next((r for r in ranked if not r["method"].startswith("baseline:")), None)
        margin = None
        if baseline is not None and backbone is not None:
            margin = backbone["value"] - baseline["value"]
            margin = margin if higher_is_better(ranked[0]["metric"]) else -margin
        out.append({"task": task, "metric": ranked[0]["metric"], "best": ranked[0], "baseline": baseline,
                    "backbone": backbone, "margin": margin})
    return out


def _with_ci(r: dict[str, Any] | None, sep: str, models: bool) -> str:
    if r is None:
        return ""
    ci = ci_label(r)
    model = f"{r['model']} · " if models and r["model"] != "none" else ""
    return f"{model}{method_label(r)}{sep}{value_label(r)}" + (f" {ci}" if ci else "")


SUMMARY_HEADERS = ("task", "metric", "best row", "best classic baseline", "best use of the backbone",
                   "backbone - baseline")


def summary_table(rows: list[dict[str, Any]], tasks: list[str], sep: str = ": ") -> list[list[str]]:
    """task_summary as the cells of the "Best per task" table (SUMMARY_HEADERS), for the Markdown and the page;
    `sep` goes between a row's method and its value (the page breaks the line there). A row is named by its
    model too when the rows come from more than one backbone."""
    models = len({r["model"] for r in rows if r["model"] != "none"}) > 1
    out = []
    for t in task_summary(rows, tasks):
        bb = t["backbone"]
        sig = "" if bb is None or bb["_rank"] == 0 or bb["p_value"] is None else \
            f" ({BELOW if bb['below_best'] else ''}p={bb['p_value']:.3f} vs best)"
        margin = "" if t["margin"] is None else f"{t['margin']:+.2f}"
        out.append([t["task"], metric_label(t["metric"]), _with_ci(t["best"], sep, models), _with_ci(t["baseline"], sep, models),
                    _with_ci(bb, sep, models) + sig, margin])
    return out


def _summary_lines(rows: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    out = ["## Best per task", "", "| " + " | ".join(SUMMARY_HEADERS) + " |", "|---" * len(SUMMARY_HEADERS) + "|"]
    return out + ["| " + " | ".join(cells) + " |" for cells in summary_table(rows, tasks)] + [""]


def write_markdown(result: LeaderboardResult, rows: list[dict[str, Any]], path: Path, command: str | None) -> Path:
    name = result.config.name or Path(result.config.source).stem
    out = [f"# Leaderboard: {name}", ""] + [f"{line}  " for line in header_lines(result, command)] + [""]
    out += _summary_lines(rows, result.config.tasks) + ["## Every row (primary metric)", ""]
    out += ["| task | # | model | method | metric | value | 95% CI | n | budget | trainable params | train s "
            "| eval s | peak MB | vs best | record |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["_primary"]:
            continue
        rec = r["_records"][0]
        link = os.path.relpath(rec, path.parent) if rec is not None else ""
        more = f" (+{len(r['_records']) - 1})" if len(r["_records"]) > 1 else ""
        seeds = f", {len(r['_seeds'])} seeds" if len(r["_seeds"]) > 1 else ""
        out.append(f"| {r['task']} | {'' if r['_rank'] is None else r['_rank'] + 1} | {r['model']} | "
                   f"{method_label(r)}{seeds} | {metric_label(r['metric'])} | {value_label(r)} | {ci_label(r)} | {fmt(r['n'])} | "
                   f"{r['budget']} | {params_label(r['trainable_params'])} | {fmt(r['train_seconds'], 1)} | "
                   f"{fmt(r['eval_seconds'], 1)} | {fmt(r['peak_memory_mb'], 0)} | {sig_label(r)} | [json]({link}){more} |")
    out += [""] + [f"- {n}" for n in method_notes(result)]
    skipped = [f"- {n.cell}: {n.message}" for n in result.notes]
    failed = [f"- {s.cell.label}: {s.message}" for s in result.cells if s.status == "failed"]
    missing = [f"- {s.cell.label}" for s in result.cells if s.status == "missing"]
    for title, items in (("Skipped", skipped), ("Failed (rerun the command to retry)", failed),
                         ("Not run yet", missing)):
        if items:
            out += ["", f"## {title}", ""] + items
    stem = result.config.output
    out += ["", f"Full table (every metric): `{stem}.csv`; sortable page with plots: `{stem}.html`.", ""]
    atomic_write_text(path, "\n".join(out))
    return path
