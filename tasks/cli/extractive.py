"""`gpt2suite finetune-extractive` and `gpt2suite eval-extractive`: extractive summarization (a sentence scorer).

    gpt2suite finetune-extractive --task TASK --method lora|full [--model results/backbones/default]
        [--config FILE.yaml] [--max-train-examples N] [--max-eval-examples N] [--epochs E] [--max-steps S]
        [--seed S] [--out DIR] [--split S] [--runs-dir DIR] [--set KEY=VALUE ...]
    gpt2suite eval-extractive --task TASK --model RUN/model [--adapter DIR] [--split S] [--limit N]
    python -m tasks.cli.extractive finetune-extractive ...          (the same, without the main command line)

The fine-tuning config layers are `gpt2suite finetune`'s (configs/finetune/defaults.yaml < <task>.yaml < flags);
`--set` also takes the extractive settings: `budget=count|ratio` (the summary length rule learned on train),
`context_tokens=N` (preceding sentences read at the start of a window), `max_oracle_sentences=N`. Both commands
write a run record (method extractive-<method>) with per-example predictions beside it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from tasks.cli.finetune import _check_counts, _set_overrides, _summary


def run_finetune_extractive(args: argparse.Namespace) -> int:
    from tasks.data.registry import get_task
    from tasks.methods.extractive import check_extractive, finetune_extractive, split_overrides
    from tasks.methods.finetune import DEFAULT_MODEL, load_finetune_config

    _check_counts(args, ("max_train_examples", "max_eval_examples", "epochs", "max_steps"))
    task = get_task(args.task)
    check_extractive(task, args.method, args.split or task.eval_split)
    settings, overrides = split_overrides(_set_overrides(args.set))
    for name in ("max_train_examples", "max_eval_examples", "epochs", "max_steps", "seed"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.no_progress:
        overrides["progress"] = False
        from tasks.cli.quiet import silence_libraries

        silence_libraries()  # the datasets and transformers bars too
    cfg = load_finetune_config(task, args.method, args.config, overrides)
    record = finetune_extractive(task, args.method, args.model or DEFAULT_MODEL, cfg, settings, out_dir=args.out,
                                 split=args.split, runs_dir=args.runs_dir)
    print(_summary(record, args.runs_dir))
    oracle = ", ".join(f"{k}={v:.2f}" for k, v in record.details["oracle_metrics"].items())
    print(f"budget: {record.details['budget']}; oracle on the same examples: {oracle}")
    print(f"train {record.train_seconds:.0f} s, eval {record.eval_seconds:.0f} s; model: {record.config['out_dir']}/model")
    return 0


def run_eval_extractive(args: argparse.Namespace) -> int:
    from gpt2core.devices import check_device
    from tasks.methods.extractive import evaluate_extractive

    _check_counts(args, ("limit", "batch_size"))
    check_device(args.device)
    overrides = _set_overrides(args.set)
    if args.batch_size is not None:
        overrides["eval_batch_size"] = args.batch_size
    record = evaluate_extractive(args.task, args.model, adapter=args.adapter, split=args.split, limit=args.limit,
                                 overrides=overrides, runs_dir=args.runs_dir, device=args.device)
    print(_summary(record, args.runs_dir))
    return 0


def add_extractive_parsers(subparsers: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    ft = subparsers.add_parser("finetune-extractive", formatter_class=fmt, description=__doc__,
                               help="train a sentence scorer for extractive summarization (full, lora)")
    ft.add_argument("--task", required=True)
    ft.add_argument("--method", required=True, help="full or lora")
    ft.add_argument("--model", help="backbone folder (default: results/backbones/default)")
    ft.add_argument("--config", help="YAML config (default: configs/finetune/<task>.yaml over defaults.yaml)")
    ft.add_argument("--max-train-examples", type=int)
    ft.add_argument("--max-eval-examples", type=int)
    ft.add_argument("--epochs", type=float)
    ft.add_argument("--max-steps", type=int)
    ft.add_argument("--seed", type=int)
    ft.add_argument("--out", help="run folder (default: runs/finetune/<task>/extractive-<method>-...)")
    ft.add_argument("--split", help="split to report scores on (default: the task's eval split)")
    ft.add_argument("--runs-dir", help="where records go (default: runs/records, ignored by git)")
    ft.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any fine-tuning config key, or budget / context_tokens / max_oracle_sentences")
    ft.add_argument("--no-progress", action="store_true")
    ft.set_defaults(func=run_finetune_extractive)

    ev = subparsers.add_parser("eval-extractive", formatter_class=fmt, description=__doc__,
                               help="evaluate a sentence scorer written by finetune-extractive")
    ev.add_argument("--task", required=True)
    ev.add_argument("--model", required=True, help="the run's <out>/model folder, or a backbone with --adapter")
    ev.add_argument("--adapter")
    ev.add_argument("--split")
    ev.add_argument("--limit", type=int)
    ev.add_argument("--batch-size", type=int)
    ev.add_argument("--runs-dir")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ev.set_defaults(func=run_eval_extractive)


def main(argv: Sequence[str] | None = None) -> int:
    from gpt2core.cli import run_command, set_offline_defaults

    set_offline_defaults()
    parser = argparse.ArgumentParser(prog="gpt2suite")
    add_extractive_parsers(parser.add_subparsers(dest="command", required=True))
    return run_command(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
