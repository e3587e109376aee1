"""Learning curves of a leaderboard's fine-tuning cells: the validation score at each of a run's evaluations against
the training examples seen so far (the records' details.training.log), one panel per task, and a Markdown table
with the score on the evaluated split at the end.

    .venv/bin/python scripts/learning_curves.py --config configs/leaderboard/full.yaml --out results \
        [--name learning_curves]                   # -> results/learning_curves.{png,md}

Examples seen = epoch x training rows (windows for QA count as their question). The validation rows are the run's
own (held out of train where the evaluated split is validation), so a curve says how the score still moves with
more data or epochs, which is what a missed goal needs to be read against.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.data.registry import get_task  # noqa: E402
from tasks.leaderboard import run_leaderboard  # noqa: E402
from tasks.leaderboard.render.plots import method_colour  # noqa: E402


def curves(config: str, out: str) -> list[dict[str, Any]]:
    """One entry per cached fine-tuning cell: task, method, seed, points [(examples seen, validation score)]."""
    result = run_leaderboard(config, out, dry_run=True, log=lambda _: None)
    found = []
    for s in result.cells:
        if s.status != "cached" or s.cell.kind != "finetune" or s.record is None:
            continue
        r = s.record
        spec = get_task(r.task)
        training = (r.details or {}).get("training") or {}
        n_train = r.config.get("train_examples") or 0
        key = f"eval_{spec.primary_metric}"
        points = [(e["epoch"] * n_train, e[key]) for e in training.get("log", []) if key in e]
        found.append({"task": r.task, "method": s.cell.method.row_method, "seed": r.seed, "points": points,
                      "metric": spec.primary_metric, "test": r.metrics.get(spec.primary_metric),
                      "train_examples": n_train, "epochs_run": training.get("epochs_run"),
                      "train_seconds": r.train_seconds, "eval_seconds": r.eval_seconds})
    return found


def plot(found: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(f["task"] for f in found))
    cols = min(4, len(tasks))
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for f in (f for f in found if f["task"] == task and f["points"]):
            xs, ys = zip(*f["points"])
            ax.plot(xs, ys, marker="s" if f["method"].endswith("full") else "o", ms=3,
                    color=method_colour(f["method"]),
                    linestyle="--" if "extractive" in f["method"] else "-",
                    label=f["method"].removeprefix("finetune:") + ("" if f["seed"] == 0 else f" s{f['seed']}"))
            if f["test"] is not None:  # the kept checkpoint on the evaluated split: how far validation is from it
                best = max(range(len(ys)), key=lambda i: ys[i])  # the checkpoint the run kept
                ax.plot([xs[best]], [f["test"]], marker="*", ms=9, color=method_colour(f["method"]), linestyle="none")
        metric = next(f["metric"] for f in found if f["task"] == task)
        ax.set_title(f"{task}: validation {metric} (star: eval split)", fontsize=10)
        ax.set_xlabel("training examples seen", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(found: list[dict[str, Any]]) -> str:
    lines = ["| task | method | train rows | epochs run | validation (examples seen: score) | eval split | "
             "train s | eval s |", "|---|---|---|---|---|---|---|---|"]
    for f in found:
        pts = ", ".join(f"{x:,.0f}: {y:.2f}" for x, y in f["points"])
        test = "" if f["test"] is None else f"{f['test']:.2f}"
        epochs = "" if f["epochs_run"] is None else f"{f['epochs_run']:.2f}"
        seed = "" if f["seed"] == 0 else f" (seed {f['seed']})"
        lines.append(f"| {f['task']} | {f['method']}{seed} | {f['train_examples']:,} | {epochs} | {pts} | {test} | {f['train_seconds'] or 0:.0f} | "
                     f"{f['eval_seconds'] or 0:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True, help="the leaderboard's output folder (its records: <out>/runs)")
    parser.add_argument("--name", default="learning_curves")
    args = parser.parse_args()
    found = curves(args.config, args.out)
    if not found:
        sys.exit(f"learning_curves: no fine-tuning record of {args.config} under {args.out}/runs yet")
    out = Path(args.out)
    plot(found, out / f"{args.name}.png")
    (out / f"{args.name}.md").write_text(
        f"# Learning curves ({args.config})\n\nWritten by `scripts/learning_curves.py --config {args.config} "
        f"--out {args.out}`. Validation scores at each evaluation of a run against the training examples seen; "
        f"the eval-split score of the kept (best) checkpoint at the end.\n\n![curves]({args.name}.png)\n\n"
        + table(found))
    print(f"wrote {out / args.name}.png and .md ({len(found)} runs)")


if __name__ == "__main__":
    main()
