"""`gpt2suite finetune` and `gpt2suite eval`.

    gpt2suite finetune --task TASK --method lora [--model results/backbones/default] [--config FILE.yaml]
        [--max-train-examples N] [--max-eval-examples N] [--epochs E] [--max-steps S] [--seed S] [--out DIR]
        [--split S] [--runs-dir DIR] [--set KEY=VALUE ...]
    gpt2suite eval --task TASK --model RUN/model [--adapter DIR] [--split S] [--limit N] [--num-beams B]
    torchrun --standalone --nproc_per_node=2 -m tasks.cli.finetune finetune --task TASK --method lora ...   (DDP)

Both write a run record (runs/records/*.json by default) and per-example predictions beside it. `--set` takes any config
key: a common one (`--set lr=3e-4`) or a setting of the run's method (`--set r=4` for LoRA).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpt2core.errors import ConfigError
from tasks.kinds.base import FINETUNE_METHODS


def _summary(record: Any, runs_dir: str | None) -> str:
    from tasks.evaluation.records import DEFAULT_RUNS_DIR, record_name

    metrics = ", ".join(f"{k}={v:.2f}" for k, v in record.metrics.items() if v is not None)
    path = Path(runs_dir or DEFAULT_RUNS_DIR) / record_name(record)
    return (f"{record.task} {record.method} on {record.split} ({record.n_examples} examples): {metrics}\n"
            f"record: {path}\npredictions: {record.predictions}")


def _set_overrides(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({e})") from None
    return out


def _check_counts(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """A count flag of 0 or less is an error here: `--max-steps 0` would otherwise mean "train by epochs"."""
    for name in names:
        value = getattr(args, name)
        if value is not None and not value > 0:
            flag = "--" + name.replace("_", "-")
            least = "above 0" if name == "epochs" else "at least 1"
            raise ConfigError(f"{flag} must be {least}, got {value}; leave {flag} out for "
                              + ("every example" if name == "limit" else "the config's value"))


def run_finetune(args: argparse.Namespace) -> int:
    from tasks.data.registry import get_task
    from tasks.methods.finetune import DEFAULT_MODEL, finetune, load_finetune_config
    from tasks.methods.finetune.run import check_finetunable

    _check_counts(args, ("max_train_examples", "max_eval_examples", "epochs", "max_steps"))
    task = get_task(args.task)
    check_finetunable(task, args.method, args.split or task.eval_split)
    overrides = _set_overrides(args.set)
    for name in ("max_train_examples", "max_eval_examples", "epochs", "max_steps", "seed"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.no_progress:
        overrides["progress"] = False
        from tasks.cli.quiet import silence_libraries

        silence_libraries()  # the datasets "tokenizing" and transformers "Writing model shards" bars too
    cfg = load_finetune_config(task, args.method, args.config, overrides)
    record = finetune(task, args.method, args.model or DEFAULT_MODEL, cfg, out_dir=args.out, split=args.split,
                      runs_dir=args.runs_dir)
    if record is not None:  # None on the non-main processes of a distributed run
        print(_summary(record, args.runs_dir))
        training = record.details.get("training", {})
        model_dir = Path(record.config["out_dir"]) / "model"
        print(f"trained: {training.get('global_steps')} steps on {record.config.get('train_examples')} examples, "
              f"best checkpoint chosen on {record.config.get('val_examples_used')} validation examples")
        print(f"model: {model_dir}   (gpt2suite eval --task {record.task} --model {model_dir})")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from gpt2core.devices import check_device
    from tasks.methods.evaluate import evaluate

    _check_counts(args, ("limit", "batch_size", "num_beams", "max_length"))
    check_device(args.device)
    overrides = _set_overrides(args.set)
    for name in ("batch_size", "num_beams", "max_length"):
        if getattr(args, name) is not None:
            overrides["eval_batch_size" if name == "batch_size" else name] = getattr(args, name)
    record = evaluate(args.task, args.model, adapter=args.adapter, split=args.split, limit=args.limit,
                      overrides=overrides, runs_dir=args.runs_dir, device=args.device)
    print(_summary(record, args.runs_dir))
    return 0


def add_finetune_parsers(subparsers: Any) -> None:
    """Register `finetune` and `eval` on the `gpt2suite` subcommand parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    methods = ", ".join(FINETUNE_METHODS)
    ft = subparsers.add_parser("finetune", help=f"fine-tune a backbone on a task ({methods})",
                               description=__doc__, formatter_class=fmt)
    ft.add_argument("--task", required=True, help="task name (a spec in tasks/specs or $GPT2SUITE_TASK_PATH)")
    ft.add_argument("--method", required=True, help=f"adaptation method: {methods}")
    ft.add_argument("--model", help="backbone folder (default: results/backbones/default)")
    ft.add_argument("--config", help="YAML config (default: configs/finetune/<task>.yaml over defaults.yaml)")
    ft.add_argument("--max-train-examples", type=int, help="seeded subset of the training split")
    ft.add_argument("--max-eval-examples", type=int, help="first N of a fixed shuffle of the reported split")
    ft.add_argument("--epochs", type=float)
    ft.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    ft.add_argument("--seed", type=int)
    ft.add_argument("--out", help="run folder for the trained model (default: runs/finetune/<task>/<method>-...)")
    ft.add_argument("--split", help="split to report scores on (default: the task's eval split)")
    ft.add_argument("--runs-dir", help="where records go (default: runs/records, ignored by git)")
    ft.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
    ft.add_argument("--no-progress", action="store_true", help="no progress bars")
    ft.set_defaults(func=run_finetune)

    ev = subparsers.add_parser(
        "eval", help="evaluate a fine-tuned model (or backbone + adapter) on a task", formatter_class=fmt,
        description="Evaluate what `gpt2suite finetune` saved (its <out>/model folder: a fully fine-tuned model,\n"
                    "or an adapter / head whose backbone it names) on a split, and write a run record with\n"
                    "per-example predictions. Input settings come from the same config layers as fine-tuning.\n\n"
                    "    gpt2suite eval --task TASK --model runs/finetune/TASK/lora-default-seed0/model [--limit N]")
    ev.add_argument("--task", required=True)
    ev.add_argument("--model", required=True, help="fine-tuned model/adapter folder, or a backbone with --adapter")
    ev.add_argument("--adapter", help="adapter or head folder written by `gpt2suite finetune`")
    ev.add_argument("--split", help="default: the task's eval split")
    ev.add_argument("--limit", type=int, help="first N of a fixed shuffle of the split")
    ev.add_argument("--batch-size", type=int)
    ev.add_argument("--num-beams", type=int, help="generation tasks: beam search width (1 = greedy)")
    ev.add_argument("--max-length", type=int)
    ev.add_argument("--runs-dir", help="where records go (default: runs/records, ignored by git)")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
    ev.set_defaults(func=run_eval)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for `python -m tasks.cli.finetune` (what torchrun runs)."""
    from gpt2core.cli import run_command, set_offline_defaults

    set_offline_defaults()
    parser = argparse.ArgumentParser(prog="gpt2suite")
    add_finetune_parsers(parser.add_subparsers(dest="command", required=True))
    return run_command(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
