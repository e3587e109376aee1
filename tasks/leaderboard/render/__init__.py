"""Rendering the leaderboard: rows with bootstrap intervals and paired tests (rows.py), then CSV and Markdown
(tables.py), the plots (plots.py) and the HTML page (page.py + page.html). Reads a LeaderboardResult (result.py)."""

from __future__ import annotations

import os
from pathlib import Path

from tasks.leaderboard.render.page import write_html
from tasks.leaderboard.render.plots import plot_pareto, plot_scores
from tasks.leaderboard.render.tables import write_csv, write_markdown
from tasks.leaderboard.result import LeaderboardResult


def render(result: LeaderboardResult, out: str | os.PathLike, command: str | None = None) -> dict[str, Path]:
    """Write <stem>.csv / .md / .html and the plots <stem>_scores.png / <stem>_pareto.png into `out`, where
    <stem> is the config's `output` (default `leaderboard`); returns {name: path}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = result.config.output
    rows = result.rows
    files: dict[str, Path] = {}
    files["csv"] = write_csv(rows, out / f"{stem}.csv")
    files["md"] = write_markdown(result, rows, out / f"{stem}.md", command)
    scores = plot_scores(rows, result.config.tasks, out / f"{stem}_scores.png")
    pareto = plot_pareto(rows, result.config.tasks, out / f"{stem}_pareto.png")
    for name, p in (("scores_png", scores), ("pareto_png", pareto)):
        if p is not None:
            files[name] = p
    files["html"] = write_html(result, rows, out / f"{stem}.html", [scores, pareto], command)
    return files
