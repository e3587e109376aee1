"""The sortable HTML page: page.html (its CSS and script) filled with the rows as JSON, the header, the notes and
the plots inlined as PNG data URIs. The page's script builds the table from the data, so the file stands alone."""

from __future__ import annotations

import base64
import html
import json
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from tasks.leaderboard.render.rows import COLUMNS
from tasks.leaderboard.render.text import header_lines, method_notes
from tasks.leaderboard.result import LeaderboardResult
from tasks.leaderboard.tasks_api import atomic_write_text, metric_label

TEMPLATE = "page.html"  # beside this module: $name, $header, $notes, $skipped, $failed, $plots, $data


def _png_b64(path: Path | None) -> str | None:
    return base64.b64encode(path.read_bytes()).decode("ascii") if path is not None and path.exists() else None


def write_html(result: LeaderboardResult, rows: list[dict[str, Any]], path: Path, plots: list[Path | None],
               command: str | None) -> Path:
    public = [{**{c: r[c] for c in COLUMNS}, "metric": metric_label(r["metric"]), "_primary": r["_primary"],
               "_rank": r["_rank"]} for r in rows]
    data = json.dumps({"columns": list(COLUMNS), "rows": public}, ensure_ascii=False).replace("</", "<\\/")
    skipped = "".join(f"<li>{html.escape(n.cell)}: {html.escape(n.message)}</li>" for n in result.notes)
    failed = "".join(f"<li>{html.escape(s.cell.label)}: {html.escape(s.message or '')}</li>"
                     for s in result.cells if s.status == "failed")
    imgs = "".join(f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,{b64}">'
                   for p in plots if (b64 := _png_b64(p)))
    template = Template(resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8"))
    page = template.substitute(
        name=html.escape(result.config.name or Path(result.config.source).stem),
        header="".join(f"<p>{html.escape(line).replace('`', '')}</p>" for line in header_lines(result, command)),
        notes="".join(f"<li>{html.escape(n).replace('`', '')}</li>" for n in method_notes(result)),
        skipped=f'<h2>Skipped</h2><ul class="notes">{skipped}</ul>' if skipped else "",
        failed=f'<h2>Failed</h2><ul class="notes">{failed}</ul>' if failed else "",
        plots=imgs or "<p>(no rows to plot)</p>",
        data=data,
    )
    atomic_write_text(path, page)
    return path
