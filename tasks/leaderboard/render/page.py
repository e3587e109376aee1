"""The sortable HTML page: page.html (its CSS and script) filled with the header, the "Best per task" summary (the
Markdown's, from tables.summary_table), the rows as JSON, the notes and the plots inlined as PNG data URIs. Every
cell's text is formatted here, as in the Markdown (text.py); the page's script only sorts (on the raw values, which
the JSON keeps) and builds the table, so the file stands alone."""

from __future__ import annotations

import base64
import html
import json
import os
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from tasks.leaderboard.render.rows import COLUMNS
from tasks.leaderboard.render.tables import SUMMARY_HEADERS, summary_table
from tasks.leaderboard.render.text import (BELOW, ci_label, fmt, header_lines, method_label, method_notes,
                                           params_label, sig_label, value_label)
from tasks.leaderboard.result import LeaderboardResult
from tasks.leaderboard.tasks_api import atomic_write_text, bootstrap, metric_label

TEMPLATE = "page.html"  # beside this module: $name, $header, $summary, $notes, $lists, $plots, $data

# The table's columns: (header, tooltip). The significance sits by the value; the record comes last.
HEADERS = [
    ("task", ""), ("#", "rank within the task on its primary metric"), ("model", ""), ("method", ""), ("metric", ""),
    ("value", "the metric's value (the mean over seeds for a row of several seeds)"),
    ("95% CI", "95% percentile bootstrap interval over the examples"),
    ("vs best", f"one-sided paired bootstrap against the task's best row; {BELOW}: significantly below it "
                f"(p < {bootstrap.ALPHA})"),
    ("n", "examples scored (tokens, for a text scored as a whole)"),
    ("budget", "what the row was given: fine-tuning optimizer steps x batch, training examples / validation "
               "examples the best checkpoint was chosen on; a baseline's training rows; the perplexity window"),
    ("trained params", "parameters the method trains (0: none; empty: no parameters recorded)"),
    ("train s", "training wall time, seconds"), ("eval s", "evaluation wall time, seconds"),
    ("peak MB", "peak memory, MB"), ("record", "the run record(s) the row is read from"),
]


def _links(r: dict[str, Any], page_dir: Path) -> list[list[str]]:
    """[label, href, title] per record: "json" for one run, "sN" (seed N) for each of several."""
    recs = [p for p in r["_records"] if p is not None]
    seeds = r["_seeds"] if len(r["_seeds"]) == len(recs) else list(range(len(recs)))
    return [["json" if len(recs) == 1 else f"s{s}", Path(os.path.relpath(p, page_dir)).as_posix(),
             Path(p).name] for p, s in zip(recs, seeds)]


def _row(r: dict[str, Any], page_dir: Path) -> dict[str, Any]:
    """One table row: `cells` (text per HEADERS column), `sort` (the raw value to sort on) and the raw fields."""
    seeds = f", {len(r['_seeds'])} seeds" if len(r["_seeds"]) > 1 else ""
    primary = r["_primary"]
    rank = r["_rank"] + 1 if r["_rank"] is not None and primary else None
    cells = [r["task"], fmt(rank), r["model"], method_label(r) + seeds, metric_label(r["metric"]), value_label(r),
             ci_label(r), sig_label(r) if primary else "", fmt(r["n"]), r["budget"], params_label(r["trainable_params"]),
             fmt(r["train_seconds"], 1), fmt(r["eval_seconds"], 1), fmt(r["peak_memory_mb"], 0), ""]
    sort = [r["task"], rank, r["model"], method_label(r), metric_label(r["metric"]), r["value"], r["ci_low"],
            (r["p_value"] if r["p_value"] is not None else -1 if r["_rank"] == 0 else None) if primary else None,
            r["n"], r["budget"], r["trainable_params"], r["train_seconds"], r["eval_seconds"], r["peak_memory_mb"], r["record"]]
    return {"cells": cells, "sort": sort, "links": _links(r, page_dir), "primary": primary,
            "best": primary and r["_rank"] == 0, "below": bool(primary and r["below_best"]),
            "raw": {c: r[c] for c in COLUMNS}}


def _summary(rows: list[dict[str, Any]], tasks: list[str]) -> str:
    def cell(text: str) -> str:
        return html.escape(text).replace(BELOW, f'<span class="below">{BELOW}</span>').replace("\n", "<br>")

    head = "".join(f"<th>{html.escape(h)}</th>" for h in SUMMARY_HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in cells) + "</tr>"
                   for cells in summary_table(rows, tasks, sep="\n"))
    return f'<table id="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>' if body else ""


def _png_b64(path: Path | None) -> str | None:
    return base64.b64encode(path.read_bytes()).decode("ascii") if path is not None and path.exists() else None


def _lists(result: LeaderboardResult) -> str:
    """Failed and not-run cells in the open; the (often long) skipped list folded."""
    failed = [f"{s.cell.label}: {s.message or ''}" for s in result.cells if s.status == "failed"]
    missing = [s.cell.label for s in result.cells if s.status == "missing"]
    skipped = [f"{n.cell}: {n.message}" for n in result.notes]
    out = ""
    for title, items, folded in (("Failed (rerun the command to retry)", failed, False),
                                 ("Not run yet", missing, False), ("Skipped", skipped, True)):
        if items:
            lis = "".join(f"<li>{html.escape(i)}</li>" for i in items)
            out += (f'<details><summary>{title} ({len(items)})</summary><ul class="notes">{lis}</ul></details>'
                    if folded else f'<h2>{title}</h2><ul class="notes">{lis}</ul>')
    return out


def write_html(result: LeaderboardResult, rows: list[dict[str, Any]], path: Path, plots: list[Path | None],
               command: str | None) -> Path:
    data = json.dumps({"headers": HEADERS, "rows": [_row(r, path.parent) for r in rows]},
                      ensure_ascii=False).replace("</", "<\\/")
    imgs = "".join(f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,{b64}">'
                   for p in plots if (b64 := _png_b64(p)))
    template = Template(resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8"))
    page = template.substitute(
        name=html.escape(result.config.name or Path(result.config.source).stem),
        header="".join(f"<p>{html.escape(line).replace('`', '')}</p>" for line in header_lines(result, command)),
        summary=_summary(rows, result.config.tasks),
        notes="".join(f"<li>{html.escape(n).replace('`', '')}</li>" for n in method_notes(result)),
        lists=_lists(result),
        plots=imgs or "<p>(no rows to plot)</p>",
        data=data,
    )
    atomic_write_text(path, page)
    return path
