"""Rendering the leaderboard: rows with bootstrap intervals and paired tests, then CSV, Markdown, HTML and plots.

Rows: one per (model, task, method, shots, metric). A row of several seeds reports the mean over its runs (value,
seconds, memory) and resamples the examples all its runs scored (the statistic is the mean over runs).
The wikitext2 row is one document: no interval and no test; `n` is the number of tokens scored.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from tasks import bootstrap
from tasks.bootstrap import LOWER_IS_BETTER, Run
from tasks.leaderboard import PERPLEXITY_TASK, LeaderboardResult, primary_metric, task_metrics
from tasks.registry import get_task

COLUMNS = ("model", "task", "method", "shots", "metric", "value", "ci_low", "ci_high", "n", "trainable_params",
           "train_seconds", "eval_seconds", "peak_memory_mb", "record", "below_best", "p_value")
BELOW = "▼"


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _better(metric: str, a: float, b: float) -> bool:
    return a < b if metric in LOWER_IS_BETTER else a > b


def _safe(fn: Any, *args: Any) -> Any:
    """An interval or test, or None when the predictions cannot be resampled (the row still shows its value)."""
    try:
        return fn(*args)
    except (KeyError, ValueError, TypeError) as e:
        print(f"warning: no bootstrap for {args[0].name} {args[1]}: {type(e).__name__}: {e}")
        return None


def build_rows(result: LeaderboardResult) -> list[dict[str, Any]]:
    """The leaderboard's rows (COLUMNS, plus `_`-prefixed fields for rendering), task by task, best first."""
    from tasks.records import repo_relative

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
        spec = None if task == PERPLEXITY_TASK else get_task(task)
        primary = primary_metric(task)
        records = ";".join(repo_relative(s.path) for s in members)
        for metric in task_metrics(task, first):
            value = _mean([s.record["metrics"].get(metric) for s in members])
            ci = _safe(bootstrap.confidence_interval, spec, metric, runs) if spec is not None and runs else None
            n = ci.n if ci else (first.get("counts", {}).get("tokens") if task == PERPLEXITY_TASK
                                 else first["n_examples"])
            by_task.setdefault(task, []).append({
                "model": model, "task": task, "method": method, "shots": shots, "metric": metric, "value": value,
                "ci_low": ci.low if ci else None, "ci_high": ci.high if ci else None, "n": n,
                "trainable_params": first.get("trainable_params"),
                "train_seconds": _mean([s.record.get("train_seconds") for s in members]),
                "eval_seconds": _mean([s.record.get("eval_seconds") for s in members]),
                "peak_memory_mb": _mean([s.record.get("peak_memory_mb") for s in members]),
                "record": records, "below_best": None, "p_value": None,
                "_primary": metric == primary, "_runs": runs, "_seeds": [s.cell.seed for s in members],
                "_ci_resamples": ci.resamples if ci else None, "_group": (model, method, shots),
                "_records": [s.path for s in members],
            })

    out: list[dict[str, Any]] = []
    for task in result.config.tasks:
        rows = by_task.get(task, [])
        primary_rows = [r for r in rows if r["_primary"] and r["value"] is not None]
        metric = primary_metric(task)
        order = sorted(primary_rows, key=lambda r: r["value"], reverse=metric not in LOWER_IS_BETTER)
        if order:
            best = order[0]
            best["below_best"] = False
            spec = None if task == PERPLEXITY_TASK else get_task(task)
            for r in order[1:]:
                test = (_safe(bootstrap.paired_test, spec, metric, best["_runs"], r["_runs"])
                        if spec is not None and best["_runs"] and r["_runs"] else None)
                if test is not None:
                    r["p_value"] = test.p_value
                    r["below_best"] = test.p_value < bootstrap.ALPHA
        rank = {r["_group"]: i for i, r in enumerate(order)}
        rows.sort(key=lambda r: (rank.get(r["_group"], len(rank)), not r["_primary"]))
        for r in rows:
            r["_rank"] = rank.get(r["_group"])
        out.extend(rows)
    return out


# ---- formatting ------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.{digits}f}"
    return str(value)


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
    _write(path, buf.getvalue())
    return path


def _write(path: Path, text: str) -> None:
    from tasks.records import atomic_write_text

    atomic_write_text(path, text)


def _sig(r: dict[str, Any]) -> str:
    if r["_rank"] == 0:
        return "best"
    if r["p_value"] is None:
        return ""
    return f"{BELOW} p={r['p_value']:.3f}" if r["below_best"] else f"p={r['p_value']:.3f}"


def _method_label(r: dict[str, Any]) -> str:
    shots = r["shots"]
    return r["method"] + (f" (k={shots})" if r["method"].startswith("few-shot") and shots is not None else "")


def _params(n: Any) -> str:
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
            total += (s.record.get("train_seconds") or 0) + (s.record.get("eval_seconds") or 0)
    return total, result.count("ran"), result.count("cached")


def _header_lines(result: LeaderboardResult, command: str | None) -> list[str]:
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


METHOD_NOTES = [
    "Each task's methods are scored on the same examples (the first `max_eval_examples` of a seed-0 shuffle of "
    "the eval split). Rows of several seeds show the mean over seeds.",
    f"95% CI: percentile bootstrap over examples, {bootstrap.RESAMPLES} resamples (seeded); BLEU/chrF and F1 are "
    "recomputed as corpus metrics on each resample (sacreBLEU sufficient statistics / confusion counts); any "
    f"other corpus metric through `compute_metrics` with {bootstrap.FALLBACK_RESAMPLES} resamples.",
    f"{BELOW}: significantly below the task's best row on its primary metric (one-sided paired bootstrap over the "
    f"examples both rows scored, {bootstrap.RESAMPLES} resamples, p < {bootstrap.ALPHA}).",
    "wikitext2: bits per byte (lower is better) of the WikiText-2 test text; one document, so no interval or test.",
]


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
            margin = -margin if ranked[0]["metric"] in LOWER_IS_BETTER else margin
        out.append({"task": task, "metric": ranked[0]["metric"], "best": ranked[0], "baseline": baseline,
                    "backbone": backbone, "margin": margin})
    return out


def _with_ci(r: dict[str, Any] | None) -> str:
    if r is None:
        return ""
    digits = 4 if r["metric"] == "bits_per_byte" else 2
    ci = f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if r["ci_low"] is not None else ""
    return f"{_method_label(r)}: {_fmt(r['value'], digits)}{ci}"


def _summary_lines(rows: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    out = ["## Best per task", "",
           "| task | metric | best row | best classic baseline | best use of the backbone | backbone - baseline |",
           "|---|---|---|---|---|---|"]
    for t in task_summary(rows, tasks):
        bb = t["backbone"]
        sig = "" if bb is None or bb["_rank"] == 0 or bb["p_value"] is None else \
            f" ({BELOW if bb['below_best'] else ''}p={bb['p_value']:.3f} vs best)"
        margin = "" if t["margin"] is None else f"{t['margin']:+.2f}"
        out.append(f"| {t['task']} | {t['metric']} | {_with_ci(t['best'])} | {_with_ci(t['baseline'])} | "
                   f"{_with_ci(bb)}{sig} | {margin} |")
    return out + [""]


def write_markdown(result: LeaderboardResult, rows: list[dict[str, Any]], path: Path, command: str | None) -> Path:
    name = result.config.name or Path(result.config.source).stem
    out = [f"# Leaderboard: {name}", ""] + [f"{line}  " for line in _header_lines(result, command)] + [""]
    out += _summary_lines(rows, result.config.tasks) + ["## Every row (primary metric)", ""]
    out += ["| task | # | model | method | metric | value | 95% CI | n | trainable params | train s | eval s "
            "| peak MB | vs best | record |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["_primary"]:
            continue
        ci = f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if r["ci_low"] is not None else ""
        digits = 4 if r["metric"] == "bits_per_byte" else 2
        rec = r["_records"][0]
        link = os.path.relpath(rec, path.parent) if rec is not None else ""
        more = f" (+{len(r['_records']) - 1})" if len(r["_records"]) > 1 else ""
        seeds = f", {len(r['_seeds'])} seeds" if len(r["_seeds"]) > 1 else ""
        out.append(f"| {r['task']} | {'' if r['_rank'] is None else r['_rank'] + 1} | {r['model']} | "
                   f"{_method_label(r)}{seeds} | {r['metric']} | {_fmt(r['value'], digits)} | {ci} | {_fmt(r['n'])} | "
                   f"{_params(r['trainable_params'])} | {_fmt(r['train_seconds'], 1)} | {_fmt(r['eval_seconds'], 1)} | "
                   f"{_fmt(r['peak_memory_mb'], 0)} | {_sig(r)} | [json]({link}){more} |")
    out += [""] + [f"- {n}" for n in METHOD_NOTES]
    skipped = [f"- {n.cell}: {n.message}" for n in result.notes]
    failed = [f"- {s.cell.label}: {s.message}" for s in result.cells if s.status == "failed"]
    missing = [f"- {s.cell.label}" for s in result.cells if s.status == "missing"]
    for title, items in (("Skipped", skipped), ("Failed (rerun the command to retry)", failed),
                         ("Not run yet", missing)):
        if items:
            out += ["", f"## {title}", ""] + items
    stem = result.config.output
    out += ["", f"Full table (every metric): `{stem}.csv`; sortable page with plots: `{stem}.html`.", ""]
    _write(path, "\n".join(out))
    return path


# ---- plots -------------------------------------------------------------------------------------------------


def _plot_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["_primary"] and r["task"] != PERPLEXITY_TASK and r["value"] is not None]


def plot_scores(rows: list[dict[str, Any]], tasks: list[str], path: Path) -> Path | None:
    """Grouped bars: the primary metric of every (model, method) per task, with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _plot_rows(rows)
    if not rows:
        return None
    tasks = [t for t in tasks if any(r["task"] == t for r in rows)]

    def label(r: dict[str, Any]) -> str:
        return _method_label(r) if r["model"] == "none" else f"{r['model']} · {_method_label(r)}"

    labels = list(dict.fromkeys(label(r) for r in rows))
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(tasks) + 0.15 * len(rows)), 4.8))
    cmap = plt.get_cmap("tab20")
    drawn: set[str] = set()
    for i, t in enumerate(tasks):
        present = [r for lab in labels for r in rows if r["task"] == t and label(r) == lab]
        width = 0.8 / len(present)
        for k, r in enumerate(present):
            lab = label(r)
            lo = r["value"] - r["ci_low"] if r["ci_low"] is not None else 0.0
            hi = r["ci_high"] - r["value"] if r["ci_high"] is not None else 0.0
            ax.bar([i - 0.4 + (k + 0.5) * width], [r["value"]], width * 0.95, yerr=[[max(0.0, lo)], [max(0.0, hi)]],
                   capsize=2, color=cmap(labels.index(lab) % 20), label=None if lab in drawn else lab,
                   hatch="//" if r["below_best"] else None, edgecolor="white")
            drawn.add(lab)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([f"{t}\n({primary_metric(t)})" for t in tasks], fontsize=8)
    ax.set_ylabel("primary metric (0-100)")
    ax.set_title("Score per task and method (95% bootstrap intervals; hatched = significantly below the best)",
                 fontsize=10)
    ax.legend(fontsize=7, ncol=2 if len(labels) > 8 else 1, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by one with fewer (or equal) trainable parameters and a higher score, by cost."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def plot_pareto(rows: list[dict[str, Any]], tasks: list[str], path: Path) -> Path | None:
    """Score vs trainable parameters (log x; 0 is drawn at 1), one panel per task, with the Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _plot_rows(rows)
    tasks = [t for t in tasks if any(r["task"] == t for r in rows)]
    if not tasks:
        return None
    cols = min(4, len(tasks))
    nrows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(tasks):]:
        ax.axis("off")
    for ax, t in zip(axes.flat, tasks):
        pts: dict[tuple[float, float], list[str]] = {}
        for r in rows:
            if r["task"] != t:
                continue
            x = max(1.0, float(r["trainable_params"] or 0))
            name = _method_label(r).replace("baseline:", "b:").replace("finetune:", "ft:")
            pts.setdefault((x, r["value"]), []).append(name if r["model"] == "none" else f"{r['model']}·{name}")
            ax.scatter([x], [r["value"]], s=18, color="#c0392b" if r["below_best"] else "#2471a3", zorder=3)
        for (x, y), names in pts.items():
            ax.annotate(", ".join(names), (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
        front = pareto_front(list(pts))
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#7f8c8d", lw=1, zorder=2)
        ax.set_xscale("log")
        ax.set_title(f"{t} ({primary_metric(t)})", fontsize=9)
        ax.set_xlabel("trainable parameters (0 drawn at 1)", fontsize=7)
        ax.tick_params(labelsize=7)
    fig.suptitle("Cost vs quality: Pareto front per task (red = significantly below the best)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- HTML --------------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222}
h1{font-size:20px}table{border-collapse:collapse;margin:12px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;cursor:pointer;user-select:none}
th.sorted-asc:after{content:" ▲"}th.sorted-desc:after{content:" ▼"}
td.t{text-align:left}tr.best td{font-weight:600}td.below{color:#c0392b}
.notes li{margin:2px 0}img{max-width:100%;display:block;margin:10px 0}code{background:#f6f6f6;padding:1px 3px}
"""

_JS = """
(function(){
  var data = JSON.parse(document.getElementById('leaderboard-data').textContent);
  var cols = data.columns, rows = data.rows, sortCol = null, sortDir = 1;
  var table = document.getElementById('leaderboard'), box = document.getElementById('all-metrics');
  var digits = {value: 4, ci_low: 2, ci_high: 2, train_seconds: 1, eval_seconds: 1, peak_memory_mb: 0};
  function fmt(c, v){
    if (v === null || v === undefined) return '';
    if (typeof v === 'boolean') return v ? 'yes' : 'no';
    if (c === 'p_value') return v.toPrecision(3);
    if (c in digits) return v.toFixed(digits[c]);
    return String(v);
  }
  function render(){
    var shown = rows.filter(function(r){ return box.checked || r._primary; });
    if (sortCol !== null) {
      shown = shown.slice().sort(function(a, b){
        var x = a[sortCol], y = b[sortCol];
        if (x === y) return 0; if (x === null) return 1; if (y === null) return -1;
        return (x < y ? -1 : 1) * sortDir;
      });
    }
    var thead = document.createElement('thead'), hr = document.createElement('tr');
    cols.forEach(function(c){
      var th = document.createElement('th'); th.textContent = c;
      if (c === sortCol) th.className = sortDir > 0 ? 'sorted-asc' : 'sorted-desc';
      th.addEventListener('click', function(){ sortDir = (sortCol === c) ? -sortDir : 1; sortCol = c; render(); });
      hr.appendChild(th);
    });
    thead.appendChild(hr);
    var tbody = document.createElement('tbody');
    shown.forEach(function(r){
      var tr = document.createElement('tr'); if (r._rank === 0 && r._primary) tr.className = 'best';
      cols.forEach(function(c){
        var td = document.createElement('td');
        td.textContent = (c === 'below_best' && r[c]) ? '\\u25BC yes' : fmt(c, r[c]);
        if (['model','task','method','metric','record'].indexOf(c) >= 0) td.className = 't';
        if (c === 'below_best' && r[c]) td.className = 'below';
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    table.innerHTML = ''; table.appendChild(thead); table.appendChild(tbody);
    table.setAttribute('data-rows', String(shown.length));
  }
  box.addEventListener('change', render);
  render();
})();
"""


def _png_b64(path: Path | None) -> str | None:
    return base64.b64encode(path.read_bytes()).decode("ascii") if path is not None and path.exists() else None


def write_html(result: LeaderboardResult, rows: list[dict[str, Any]], path: Path, plots: list[Path | None],
               command: str | None) -> Path:
    public = [{**{c: r[c] for c in COLUMNS}, "_primary": r["_primary"], "_rank": r["_rank"]} for r in rows]
    data = json.dumps({"columns": list(COLUMNS), "rows": public}, ensure_ascii=False).replace("</", "<\\/")
    name = html.escape(result.config.name or Path(result.config.source).stem)
    header = "".join(f"<p>{html.escape(line).replace('`', '')}</p>" for line in _header_lines(result, command))
    notes = "".join(f"<li>{html.escape(n).replace('`', '')}</li>" for n in METHOD_NOTES)
    skipped = "".join(f"<li>{html.escape(n.cell)}: {html.escape(n.message)}</li>" for n in result.notes)
    failed = "".join(f"<li>{html.escape(s.cell.label)}: {html.escape(s.message or '')}</li>"
                     for s in result.cells if s.status == "failed")
    imgs = "".join(f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,{b64}">'
                   for p in plots if (b64 := _png_b64(p)))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Leaderboard: {name}</title>
<style>{_CSS}</style></head>
<body>
<h1>Leaderboard: {name}</h1>
{header}
<label><input type="checkbox" id="all-metrics"> every metric (default: each task's primary metric)</label>
<p>Click a column header to sort; click again to reverse.</p>
<table id="leaderboard"></table>
<ul class="notes">{notes}</ul>
{f'<h2>Skipped</h2><ul class="notes">{skipped}</ul>' if skipped else ''}
{f'<h2>Failed</h2><ul class="notes">{failed}</ul>' if failed else ''}
<h2>Plots</h2>
{imgs or '<p>(no rows to plot)</p>'}
<script type="application/json" id="leaderboard-data">{data}</script>
<script>{_JS}</script>
</body></html>
"""
    _write(path, page)
    return path


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
