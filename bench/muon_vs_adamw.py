"""Muon (blocks' matrices) + AdamW (the rest) against AdamW alone, at equal tokens, each at its best swept lr.

    OMP_NUM_THREADS=1 .venv/bin/python bench/muon_vs_adamw.py --steps 300 --out /tmp/muon_vs_adamw

Every run: configs/pretrain/tiny.yaml (its corpus, seed, batch) with `--steps` steps, warmup `--warmup`, cosine to
lr/10; the final validation loss over `--eval-iters` fixed batches. Muon runs keep AdamW's part at `--muon-adam-lr`.
Prints one table row per run, then the best of each optimizer; one JSON record per run goes to OUT/runs.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gpt2core.pretrain.config import load_config
from gpt2core.pretrain.loop import train

REPO = Path(__file__).resolve().parents[1]


def run(name: str, overrides: dict, args: argparse.Namespace) -> dict:
    base = {"max_steps": args.steps, "warmup_steps": args.warmup, "eval_interval": args.steps,
            "eval_iters": args.eval_iters, "log_interval": 50, "checkpoint_interval": 10**6, "ppl_eval": [],
            "progress": False, "preset": args.preset, "out_dir": str(Path(args.out) / name)}
    lr = overrides.get("lr", load_config(REPO / "configs" / "pretrain" / "tiny.yaml").lr)
    # cosine to lr/10, set with the lr so that the config's check (min_lr <= lr) sees both
    cfg = load_config(REPO / "configs" / "pretrain" / "tiny.yaml", {**base, **overrides, "min_lr": lr / 10})
    t0 = time.time()
    summary = train(cfg, log=lambda *_: None)
    return {"name": name, **overrides, "tokens": summary["tokens"] if "tokens" in summary else
            args.steps * cfg.tokens_per_step(), "val_loss": summary["val_loss"], "seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--eval-iters", type=int, default=20)
    ap.add_argument("--adamw-lrs", default="1e-3,3e-3,1e-2")
    ap.add_argument("--muon-lrs", default="0.01,0.02,0.05")
    ap.add_argument("--muon-adam-lr", type=float, default=3e-3)
    ap.add_argument("--out", default="/tmp/muon_vs_adamw")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    plan = [(f"adamw_lr{lr}", {"optimizer": "adamw", "lr": float(lr)}) for lr in args.adamw_lrs.split(",")]
    plan += [(f"muon_lr{lr}", {"optimizer": "muon", "muon_lr": float(lr), "lr": args.muon_adam_lr})
             for lr in args.muon_lrs.split(",")]
    rows = []
    print(f"| run | optimizer | AdamW lr | Muon lr | tokens | val loss | time (s) |\n|---|---|---|---|---|---|---|")
    for name, overrides in plan:
        r = run(name, overrides, args)
        rows.append(r)
        with open(Path(args.out) / "runs.jsonl", "a") as f:
            f.write(json.dumps(r) + "\n")
        print(f"| {name} | {r['optimizer']} | {r['lr']:g} | {r.get('muon_lr', '-')} | {r['tokens']:,} | "
              f"{r['val_loss']:.4f} | {r['seconds']} |", flush=True)
    for opt in ("adamw", "muon"):
        best = min((r for r in rows if r["optimizer"] == opt), key=lambda r: r["val_loss"])
        print(f"best {opt}: {best['name']} val loss {best['val_loss']:.4f}")


if __name__ == "__main__":
    main()
