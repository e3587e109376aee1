"""Choose a task's fine-tuning learning rate on validation: short runs of one method at a few learning rates, each
scored on the run's validation rows (held out of train where validation is the reported split), never on the
evaluated split; prints the table and the best, and writes it as JSON.

    .venv/bin/python scripts/choose_lr.py --task sst2 --method full --lrs 5e-5,1e-4,2e-4 \
        --max-train-examples 4000 [--epochs 1] [--val-examples 300] [--out results/lr_sweep/sst2-full.json]

The sweep's budget is far below the full-data runs (minutes, not hours, per learning rate on a CPU), so it picks
among rates a full run could use; the full-data leaderboard (configs/leaderboard/full.yaml) takes the best one.
Every other setting is the task's fine-tuning config (configs/finetune/), as `gpt2suite finetune` reads it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt2core.io import atomic_write_json  # noqa: E402
from gpt2core.paths import REPO_ROOT  # noqa: E402
from tasks.cli.quiet import silence_libraries  # noqa: E402
from tasks.data.registry import get_task  # noqa: E402
from tasks.methods.finetune import DEFAULT_MODEL, finetune, load_finetune_config  # noqa: E402

EVAL_EXAMPLES = 16  # the run still scores its eval split at the end; the sweep ignores that number


def _shown(path: str) -> str:
    """A path inside the repository relative to its root (the file is committed; where it ran does not matter)."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--lrs", required=True, help="comma-separated learning rates")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--max-train-examples", type=int, required=True)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--val-examples", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    silence_libraries()
    spec = get_task(args.task)
    rows = []
    for lr in [float(x) for x in args.lrs.split(",")]:
        overrides = {"lr": lr, "epochs": args.epochs, "max_train_examples": args.max_train_examples,
                     "max_eval_examples": EVAL_EXAMPLES, "threads": args.threads, "progress": False,
                     "checkpoint_minutes": 1e6}
        if args.val_examples is not None:
            overrides["val_examples"] = args.val_examples
        cfg = load_finetune_config(spec, args.method, overrides=overrides)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            record = finetune(spec, args.method, args.model, cfg, out_dir=Path(tmp) / "run", runs_dir=tmp)
        training = record.details["training"]
        row = {"lr": lr, f"val_{spec.primary_metric}": training["best_val_metric"],
               "val_examples": record.config["val_examples_used"], "steps": training["global_steps"],
               "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(f"{args.task} {args.method} lr {lr:g}: validation {spec.primary_metric} "
              f"{training['best_val_metric']:.4f} ({row['steps']} steps, {row['seconds']:.0f} s)", flush=True)
    best = max(rows, key=lambda r: r[f"val_{spec.primary_metric}"])
    print(f"best: lr {best['lr']:g}")
    if args.out:
        atomic_write_json(Path(args.out), {
            "task": args.task, "method": args.method, "model": _shown(args.model), "metric": spec.primary_metric,
            "max_train_examples": args.max_train_examples, "epochs": args.epochs, "runs": rows,
            "best_lr": best["lr"], "command": " ".join(sys.argv)})


if __name__ == "__main__":
    main()
