"""`gpt2suite leaderboard`: run what a leaderboard config lists (reusing run records), then render it.

    gpt2suite leaderboard --config configs/leaderboard/quick.yaml [--dry-run]     # -> runs/leaderboard/ (ignored)
    gpt2suite leaderboard --config configs/leaderboard/quick.yaml --out results   # publish into results/
    gpt2suite leaderboard --config configs/leaderboard/full.yaml --task <name> --task <name>  # a subset
    gpt2suite leaderboard --config configs/leaderboard/full.yaml --method finetune:lora     # one method
    gpt2suite leaderboard --config configs/leaderboard/quick.yaml --render-only            # no runs, just tables

Writes <out>/<output>.{csv,md,html} and <out>/<output>_{scores,pareto}.png (`output` from the config: leaderboard
by default, leaderboard_quick for quick.yaml) and the run records under <out>/runs (with index.json); <out> is
runs/leaderboard (ignored by git) unless given. A slice (--task/--model/--method) runs only its cells but renders
the whole config from every cached record, so it never replaces a full table with its own rows. Exit status: 0 when every cell has a record, 1 when a cell failed (the others are
rendered), 2 for bad input.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from tasks.cli.quiet import silence_libraries
    from tasks.leaderboard.run import run_leaderboard

    silence_libraries()  # one line per cell is the progress; library bars and warnings are noise here
    parts = ["gpt2suite", "leaderboard", "--config", args.config, "--out", args.out]
    parts += [x for t in args.task or [] for x in ("--task", t)] + [x for m in args.model or [] for x in ("--model", m)]
    parts += [x for m in args.method or [] for x in ("--method", m)]
    parts += ["--render-only"] if args.render_only else []
    command = " ".join(shlex.quote(str(a)) for a in parts)
    result = run_leaderboard(args.config, out=args.out, dry_run=args.dry_run, render_only=args.render_only,
                             models_dir=args.models_dir, only_tasks=args.task, only_models=args.model,
                             only_methods=args.method, command=command)
    if args.dry_run:
        return 0
    failed = result.failed
    print(f"{len(result.cells)} cells: {result.count('ran')} run, {result.count('cached')} reused, {len(failed)} "
          f"failed, {result.count('missing')} not run, {len(result.notes)} skipped ({result.wall_seconds:.0f} s)")
    return 1 if failed else 0


def add_leaderboard_parser(subparsers: Any) -> None:
    """Register `leaderboard` on the `gpt2suite` subcommand parser."""
    p = subparsers.add_parser("leaderboard", help="run a leaderboard config (reusing run records) and render it",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="leaderboard YAML (configs/leaderboard/quick.yaml, full.yaml)")
    p.add_argument("--out", default="runs/leaderboard",
                   help="output folder; records go to <out>/runs (default: runs/leaderboard; `results` publishes)")
    p.add_argument("--dry-run", action="store_true",
                   help="list every cell (cached or would run) and every skipped pair; run nothing")
    p.add_argument("--render-only", action="store_true", help="render from the cached records; run nothing")
    p.add_argument("--task", action="append", help="only this task of the config (repeatable)")
    p.add_argument("--model", action="append", help="only this model of the config (repeatable)")
    p.add_argument("--method", action="append",
                   help="only this method of the config, as written there (repeatable), e.g. finetune:lora")
    p.add_argument("--models-dir", help="where fine-tuned models go (default: runs/leaderboard/models)")
    p.set_defaults(func=cmd_leaderboard)
