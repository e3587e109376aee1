"""Loss curves of pretraining runs in one PNG (train loss, and validation loss where logged).

    python scripts/plot_pretrain.py OUT.png NAME=RUN_DIR [NAME=RUN_DIR ...] [--offset NAME=TOKENS]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR")
    parser.add_argument("--offset", action="append", default=[], metavar="NAME=TOKENS",
                        help="shift a run's x axis by the tokens it had already seen (a continued run)")
    parser.add_argument("--title", default="pretraining loss")
    args = parser.parse_args()
    offsets = {k: float(v) for k, v in (o.split("=", 1) for o in args.offset)}
    fig, ax = plt.subplots(figsize=(8, 5))
    for spec in args.runs:
        name, run_dir = spec.split("=", 1)
        rows = [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines() if line]
        off = offsets.get(name, 0.0)
        train = [(r["tokens"] + off, r["loss"]) for r in rows if "loss" in r]
        val = [(r["tokens"] + off, r["val_loss"]) for r in rows if r.get("val_loss") is not None]
        line, = ax.plot(*zip(*train), lw=1, alpha=0.7, label=f"{name} train")
        if val:
            ax.plot(*zip(*val), "o-", ms=3, color=line.get_color(), label=f"{name} val")
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_ylim(top=7)
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(args.out)


if __name__ == "__main__":
    main()
