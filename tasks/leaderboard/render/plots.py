"""The two plots: grouped score bars with 95% intervals, and score vs trainable parameters with the Pareto front.
matplotlib is imported inside the functions (the command line starts without it)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tasks.leaderboard.render.text import method_label
from tasks.leaderboard.tasks_api import metric_label, primary_metric


def _plot_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Primary-metric rows of tasks scored example by example (a text-scoring row is on another scale)."""
    return [r for r in rows if r["_primary"] and not r["_whole_text"] and r["value"] is not None]


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
        return method_label(r) if r["model"] == "none" else f"{r['model']} · {method_label(r)}"

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
    ax.set_xticklabels([f"{t}\n({metric_label(primary_metric(t))})" for t in tasks], fontsize=8)
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
            name = method_label(r).replace("baseline:", "b:").replace("finetune:", "ft:")
            pts.setdefault((x, r["value"]), []).append(name if r["model"] == "none" else f"{r['model']}·{name}")
            ax.scatter([x], [r["value"]], s=18, color="#c0392b" if r["below_best"] else "#2471a3", zorder=3)
        for (x, y), names in pts.items():
            ax.annotate(", ".join(names), (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
        front = pareto_front(list(pts))
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#7f8c8d", lw=1, zorder=2)
        ax.set_xscale("log")
        ax.set_title(f"{t} ({metric_label(primary_metric(t))})", fontsize=9)
        ax.set_xlabel("trainable parameters (0 drawn at 1)", fontsize=7)
        ax.tick_params(labelsize=7)
    fig.suptitle("Cost vs quality: Pareto front per task (red = significantly below the best)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
