"""The two plots, one panel per task: the primary metric of every row as bars with 95% intervals, and score vs
trainable parameters with the Pareto front. A method has one colour in both (method_colour): baselines grey,
prompting blue, each fine-tuning method its own hue. matplotlib is imported inside the functions (the command line
starts without it)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tasks.leaderboard.render.text import digits, fmt, method_label, params_label, value_label
from tasks.leaderboard.tasks_api import BASELINES, FINETUNE_METHODS, bootstrap, higher_is_better, metric_label

WIDTH_IN, DPI = 13.0, 100  # 1300 px: the page shows the plots unscaled at 1,400 px
_GREYS = ("#525252", "#8c8c8c", "#bdbdbd")
_PROMPTING = {"zero-shot": 0.35, "few-shot": 0.55, "few-shot-calibrated": 0.8}  # where on matplotlib's Blues
# tab10 without its blue (prompting) and grey (baselines), in FINETUNE_METHODS order: full, linear, lora, ...
_HUES = ("#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
_MODEL_MARKERS = ("o", "^", "D", "v", "P", "X", "*")  # a baseline (model "none") is a square
SIGNIFICANT = f"significantly below the task's best (paired bootstrap, p < {bootstrap.ALPHA})"


def method_colour(method: str, shots: int | None = None) -> str:
    """The fixed colour of a row's method: a grey per baseline, a blue per prompting method (darker with more
    shots), a hue per fine-tuning method (by their registries' order, so a method keeps its colour across tasks,
    plots and leaderboards)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    family, _, name = method.partition(":")
    if family == "baseline":
        return _GREYS[list(BASELINES).index(name) % len(_GREYS)] if name in BASELINES else _GREYS[1]
    if family == "finetune":
        return _HUES[FINETUNE_METHODS.index(name) % len(_HUES)] if name in FINETUNE_METHODS else _HUES[-1]
    shade = _PROMPTING.get(method, 0.5) + (0.05 * math.log2(shots) if method != "zero-shot" and shots else 0.0)
    return to_hex(colormaps["Blues"](min(0.95, shade)))


def _colour(r: dict[str, Any]) -> str:
    k = str(r["shots"]).split(",")[0].strip()  # rows.py may write "4, 2 used"
    return method_colour(r["method"], int(k) if k.isdigit() else None)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _labeller(rows: list[dict[str, Any]], models: bool = True) -> Any:
    """A row's name in the plots: its method, after its model when the rows come from more than one backbone."""
    several = models and len({r["model"] for r in rows if r["model"] != "none"}) > 1

    def label(r: dict[str, Any]) -> str:
        seeds = f" ({len(r['_seeds'])} seeds)" if models and len(r.get("_seeds") or ()) > 1 else ""
        return (f"{r['model']} · " if several and r["model"] != "none" else "") + method_label(r) + seeds

    return label


def _backbones(rows: list[dict[str, Any]]) -> str:
    models = sorted({r["model"] for r in rows if r["model"] != "none"})
    return f"; backbone: {models[0]}" if len(models) == 1 else ""


def _grid(plt: Any, n: int, panel_h: float, cols: int) -> tuple[Any, list[Any]]:
    cols = min(cols, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(WIDTH_IN, panel_h * nrows + 1.0), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def _title(t: str, metric: str) -> str:
    return f"{t}: {metric_label(metric)} ({'higher' if higher_is_better(metric) else 'lower'} is better)"


def plot_scores(rows: list[dict[str, Any]], tasks: list[str], path: Path) -> Path | None:
    """One panel per task: a bar per row on the task's primary metric (its own scale), best first, with its 95%
    interval; hatched when significantly below the task's best."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = [r for r in rows if r["_primary"] and r["value"] is not None]
    tasks = [t for t in tasks if any(r["task"] == t for r in rows)]
    if not tasks:
        return None
    label = _labeller(rows)
    per = {t: [r for r in rows if r["task"] == t] for t in tasks}
    most = max(len(v) for v in per.values())
    longest = max(len(label(r)) for r in rows)  # long names need wider panels
    fig, axes = _grid(plt, len(tasks), 0.75 + 0.27 * most, 3 if longest <= 24 else 2)
    for ax, t in zip(axes, tasks):
        rs = per[t]
        ys = list(range(len(rs)))
        lo = [max(0.0, r["value"] - r["ci_low"]) if r["ci_low"] is not None else 0.0 for r in rs]
        hi = [max(0.0, r["ci_high"] - r["value"]) if r["ci_high"] is not None else 0.0 for r in rs]
        bars = ax.barh(ys, [r["value"] for r in rs], 0.72, xerr=[lo, hi], color=[_colour(r) for r in rs],
                       edgecolor="#333333", linewidth=0.6, error_kw={"ecolor": "#333333", "capsize": 2, "lw": 0.9})
        for bar, r in zip(bars, rs):
            if r["below_best"]:
                bar.set_hatch("////")
        ends = [r["value"] + h for r, h in zip(rs, hi)]
        top = max(ends) or 1.0
        for y, r, end in zip(ys, rs, ends):
            ax.text(end + 0.015 * top, y, value_label(r), va="center", fontsize=7.5, color="#333333")
        ax.set_xlim(0, top * 1.2)
        ax.set_ylim(most - 0.5, -0.5)  # best on top; the same bar height in every panel
        ax.set_yticks(ys)
        ax.set_yticklabels([label(r) for r in rs], fontsize=8)
        for tick, r in zip(ax.get_yticklabels(), rs):
            if r["_rank"] == 0:
                tick.set_fontweight("bold")
        ax.set_title(_title(t, rs[0]["metric"]), fontsize=9.5, loc="left")
        ax.tick_params(axis="x", labelsize=7.5)
        ax.grid(axis="x", color="#e5e5e5", lw=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    handles = [Patch(facecolor="white", edgecolor="#333333", hatch="////", label=SIGNIFICANT),
               Line2D([], [], color="#333333", marker="|", markersize=7, lw=0.9, label="95% bootstrap interval"),
               Patch(facecolor=_GREYS[1], label="baselines (greys)"),
               Patch(facecolor=method_colour("few-shot", 4), label="prompting (blues)"),
               Patch(facecolor=_HUES[2], label="fine-tuning (a hue per method)")]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(f"Primary metric per task (bold: the task's best{_backbones(rows)})", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by one with fewer (or equal) trainable parameters and a higher score, by cost."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


_OFFSETS = ((6, 4, "left", "bottom"), (6, -4, "left", "top"), (-6, 4, "right", "bottom"),
            (-6, -4, "right", "top"), (0, 9, "center", "bottom"), (0, -9, "center", "top"))


def _place_labels(fig: Any, ax: Any, items: list[tuple[float, float, str]]) -> None:
    """Annotate each point at the first offset whose text stays inside the panel and clear of the others."""
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    taken: list[Any] = []
    for x, y, text in items:
        for i, (dx, dy, ha, va) in enumerate(_OFFSETS):
            a = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=7,
                            color="#222222", annotation_clip=False)
            bb = a.get_window_extent(renderer)
            inside = box.x0 <= bb.x0 and bb.x1 <= box.x1 and box.y0 <= bb.y0 and bb.y1 <= box.y1
            if (inside and not any(bb.overlaps(o) for o in taken)) or i == len(_OFFSETS) - 1:
                taken.append(bb)
                break
            a.remove()


def _params_tick(v: float, _pos: Any) -> str:
    return "0" if v <= 1 else params_label(round(v))


def plot_pareto(rows: list[dict[str, Any]], tasks: list[str], path: Path) -> Path | None:
    """One panel per task: score vs trainable parameters (log x; 0 is drawn at 1), the Pareto front as a step
    line with only its points labelled. Colour: the method (as in the scores plot); marker: the model."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    rows = [r for r in rows if r["_primary"] and not r["_whole_text"] and r["value"] is not None]
    tasks = [t for t in tasks if any(r["task"] == t for r in rows)]
    if not tasks:
        return None
    label, method_name = _labeller(rows), _labeller(rows, models=False)
    models = list(dict.fromkeys(r["model"] for r in rows if r["model"] != "none"))
    marker = {m: _MODEL_MARKERS[i % len(_MODEL_MARKERS)] for i, m in enumerate(models)} | {"none": "s"}
    fig, axes = _grid(plt, len(tasks), 3.0, 3)
    colours: dict[str, tuple[str, str]] = {}  # legend: method -> (colour, marker)
    labels: list[tuple[Any, list[tuple[float, float, str]]]] = []
    for ax, t in zip(axes, tasks):
        rs = [r for r in rows if r["task"] == t]
        sign = 1.0 if higher_is_better(rs[0]["metric"]) else -1.0
        at: dict[tuple[float, float], list[dict[str, Any]]] = {}
        for r in rs:
            at.setdefault((max(1.0, float(r["trainable_params"] or 0)), r["value"]), []).append(r)
        front = [(x, sign * y) for x, y in pareto_front([(x, sign * y) for x, y in at])]
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#7f7f7f", lw=1, zorder=2)
        for (x, y), here in at.items():
            for k, r in enumerate(here):  # rows on one point: the later ones smaller, so every colour shows
                ax.scatter([x], [y], s=max(14.0, 46.0 - 14 * k), marker=marker[r["model"]], color=_colour(r),
                           edgecolor="black" if (x, y) in front else "white", linewidth=0.8, zorder=3 + k)
                colours.setdefault(method_name(r), (_colour(r), "s" if r["model"] == "none" else "o"))
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, numticks=8))
        ax.xaxis.set_major_formatter(FuncFormatter(_params_tick))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(0.5, max(max(x for x, _ in at) * 4, 1e3))
        ys = [y for _, y in at]
        pad = 0.12 * ((max(ys) - min(ys)) or abs(max(ys)) or 1.0)
        ax.set_ylim(min(ys) - pad, max(ys) + 1.8 * pad)
        ax.set_title(_title(t, rs[0]["metric"]), fontsize=9.5, loc="left")
        ax.set_xlabel("trainable parameters", fontsize=8)
        ax.tick_params(labelsize=7.5)
        ax.grid(color="#eeeeee", lw=0.6)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        d = digits(rs[0]["metric"])
        labels.append((ax, [(x, y, label(at[x, y][0]) + (f" +{len(at[x, y]) - 1}" if len(at[x, y]) > 1 else "")
                             + f" ({fmt(y, d)})") for x, y in front]))
    same: dict[tuple[str, str], list[str]] = {}  # one legend entry per symbol: baselines can share a grey
    for n, cm in colours.items():
        same.setdefault(cm, []).append(n if not same.get(cm) else n.partition(":")[2] or n)
    handles = [Line2D([], [], ls="", marker=m, markersize=7, color=c, label=", ".join(ns)) for (c, m), ns in same.items()]
    if len(models) > 1:
        handles += [Line2D([], [], ls="", marker=marker[m], markersize=6, color="#555555", label=f"model {m}")
                    for m in models]
    fig.legend(handles=handles, loc="lower center", ncol=min(5, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(f"Score vs trainable parameters, per task{_backbones(rows)}", fontsize=11)
    fig.text(0.5, 0.935, "Black edge: on the Pareto front (no other row scores better with as few trainable "
             "parameters); only those points are labelled, \"+n\" when n more rows share the point.",
             ha="center", fontsize=8.5, color="#444444")
    fig.tight_layout(rect=(0, 0.02 + 0.025 * math.ceil(len(handles) / 5), 1, 0.93))
    for ax, items in labels:  # after the layout: placing needs the panels' final positions
        _place_labels(fig, ax, items)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
