"""`gpt2suite fewshot` (zero/few-shot prompting), `gpt2suite baseline` (classic baselines) and
`gpt2suite perplexity` (a whole-document task): each writes a run record (+ per-example rows) under runs/records (ignored by git).

    gpt2suite fewshot --task <task> --shots 4 --model results/backbones/default --limit 200
    gpt2suite fewshot --task <classification task> --shots 4 --calibrate
    gpt2suite fewshot --task <task> --shots 1 --model dummy         # the DummyLM: a pipeline check, no model
    gpt2suite baseline --task <task> --method tfidf-lr
    gpt2suite perplexity --model results/backbones/default            # 512-token windows, stride 256

Task names are the spec files of tasks/specs (and of $GPT2SUITE_TASK_PATH).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from tasks.errors import MethodError, TaskError

DEFAULT_MODEL = "results/backbones/default"


def _check_args(args: argparse.Namespace) -> None:
    """Counts on the command line: 0 or a negative number is an error here, not "no limit" (or a dropped row) later."""
    for name in ("limit", "max_train", "max_len", "stride", "max_chars", "batch_size"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            default = {"limit": "every example", "max_train": "every train row", "max_chars": "the whole text"}
            fix = "" if name == "batch_size" else f"; leave {flag} out for {default.get(name, 'the default')}"
            raise MethodError(f"{flag} must be at least 1, got {value}{fix}")
    if getattr(args, "shots", 0) < 0:
        raise MethodError(f"--shots must be 0 (zero-shot) or more, got {args.shots}")


def _load_lm(args: argparse.Namespace) -> tuple[Any, int | None]:
    """(the LM, its parameter count); `--model dummy` is the DummyLM."""
    from gpt2core.devices import check_device
    from tasks.models.lm import DummyLM, GPT2LM

    check_device(args.device)  # before loading: torch's own error comes late, as an AssertionError
    if args.model == "dummy":
        return DummyLM(), None
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    lm = GPT2LM.from_path(args.model, tokenizer=args.tokenizer, batch_size=args.batch_size, device=args.device)
    return lm, sum(p.numel() for p in lm.model.parameters())


def _metrics_line(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.2f}" for k, v in metrics.items())


def cmd_fewshot(args: argparse.Namespace) -> int:
    from tasks.data.registry import get_task
    from tasks.methods.fewshot import prompted_kind, run_fewshot, write_run

    _check_args(args)
    task = get_task(args.task)  # an unknown task fails before the model loads
    prompted_kind(task)
    lm, n_params = _load_lm(args)
    result = run_fewshot(lm, task, args.shots, seed=args.seed, limit=args.limit, calibrate=args.calibrate,
                         split=args.split)
    path = write_run(result, args.model, args.limit, runs_dir=args.runs_dir, total_params=n_params,
                     extra={"runtime": {"batch_size": args.batch_size, "device": args.device}})
    print(f"{task.name} {result.method} k={args.shots} seed={args.seed} n={len(result.rows)}: "
          f"{_metrics_line(result.metrics)} ({result.eval_seconds:.1f}s; demos dropped in "
          f"{result.info['examples_with_dropped_demos']} examples)")
    print(f"record: {path}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from tasks.data.registry import get_task
    from tasks.methods.baselines import run_baseline, write_baseline_run

    _check_args(args)
    task = get_task(args.task)
    t0 = time.perf_counter()
    result = run_baseline(task, args.method, split=args.split, limit=args.limit, seed=args.seed,
                          max_train=args.max_train)
    path = write_baseline_run(result, runs_dir=args.runs_dir)
    print(f"{task.name} {result.method} n={len(result.rows)}: {_metrics_line(result.metrics)} "
          f"({time.perf_counter() - t0:.1f}s)")
    print(f"record: {path}")
    return 0


def cmd_perplexity(args: argparse.Namespace) -> int:
    from tasks.data.registry import get_task
    from tasks.methods.perplexity import default_text_task, evaluate_perplexity, text_kind, write_perplexity_run

    _check_args(args)
    task = get_task(args.task) if args.task else default_text_task()
    text_kind(task)  # a task that is not scored as text fails before the model loads
    lm, n_params = _load_lm(args)
    lm.progress = True  # a bar over the windows: a whole test set takes minutes on a CPU
    result = evaluate_perplexity(lm, task, max_len=args.max_len, stride=args.stride, split=args.split,
                                 max_chars=args.max_chars)
    path = write_perplexity_run(result, args.model, runs_dir=args.runs_dir, total_params=n_params)
    s = result.scores
    print(f"{task.name} {result.split}: token_perplexity={s['token_perplexity']:.2f} "
          f"word_perplexity={s['word_perplexity']:.2f} bits_per_byte={s['bits_per_byte']:.4f} "
          f"(max_len={s['max_len']}, stride={s['stride']}, {s['eval_seconds']:.1f}s)")
    print(f"record: {path}")
    return 0


def _task_help() -> str:
    from tasks.data.registry import available_tasks

    try:
        return f"task name ({', '.join(available_tasks())})"
    except TaskError:  # a bad $GPT2SUITE_TASK_PATH: the command itself reports it
        return "task name (a spec file of tasks/specs or $GPT2SUITE_TASK_PATH)"


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model folder, or 'dummy' (default {DEFAULT_MODEL})")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the model folder)")
    p.add_argument("--batch-size", type=int, default=8, help="rows per forward pass (scores do not depend on it)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is a GPU)")
    p.add_argument("--runs-dir", help="where records go (default runs/records, ignored by git)")


def add_fewshot_parsers(subparsers: Any) -> None:
    """Register `fewshot`, `baseline` and `perplexity` on the `gpt2suite` subcommand parser."""
    task_help = _task_help()
    fmt = argparse.RawDescriptionHelpFormatter
    fs = subparsers.add_parser(
        "fewshot", help="zero/few-shot prompting of a model on a task (run record)", formatter_class=fmt,
        description="Prompt a model with K seeded demonstrations from the task's train split (0: zero-shot) and\n"
                    "score its answers on the eval split. Classification ranks the label answers two ways, as\n"
                    "lm-evaluation-harness does: summed log-likelihood (accuracy = acc) and log-likelihood per\n"
                    "answer byte (accuracy_norm = acc_norm); --calibrate applies contextual calibration to each.\n"
                    "Other kinds generate greedily until a newline. Demos that do not fit the model's window are\n"
                    "dropped and the record says how many were used.\n\n"
                    "    gpt2suite fewshot --task TASK --shots 4 --limit 200 [--calibrate]")
    fs.add_argument("--task", required=True, help=task_help)
    fs.add_argument("--shots", type=int, default=0, help="demonstrations per prompt (0 = zero-shot)")
    fs.add_argument("--seed", type=int, default=0, help="seed of the demo sampler")
    fs.add_argument("--limit", type=int, help="evaluate N examples only: the first N of the fixed shuffle that the leaderboard and `eval` score")
    fs.add_argument("--split", help="evaluated split (default: the task's eval split)")
    fs.add_argument("--calibrate", action="store_true", help="contextual calibration (classification)")
    _model_args(fs)
    fs.set_defaults(func=cmd_fewshot)

    bl = subparsers.add_parser(
        "baseline", help="a classic baseline on a task (run record)", formatter_class=fmt,
        description="Run a classic baseline the task's spec lists (its parameters come from the spec):\n"
                    "majority, tfidf-lr (classification), best-sentence, best-sentence-span (extractive QA),\n"
                    "lead-k, copy-source (generation). Scored with the same metrics and record as the models.\n\n"
                    "    gpt2suite baseline --task TASK --method tfidf-lr")
    bl.add_argument("--task", required=True, help=task_help)
    bl.add_argument("--method", help="a baseline the task's spec lists under `baselines:` (majority | tfidf-lr, "
                                     "lead-k | copy-source, best-sentence | best-sentence-span); default: the "
                                     "strongest it lists")
    bl.add_argument("--split", help="evaluated split (default: the task's eval split)")
    bl.add_argument("--limit", type=int, help="evaluate N examples only: the first N of the fixed shuffle that the leaderboard and `eval` score")
    bl.add_argument("--max-train", type=int, help="train on the first N train examples (tfidf-lr)")
    bl.add_argument("--seed", type=int, default=0)
    bl.add_argument("--runs-dir", help="where records go (default runs/records, ignored by git)")
    bl.set_defaults(func=cmd_baseline)

    pp = subparsers.add_parser(
        "perplexity", help="perplexity and bits per byte of a whole-document task (run record)",
        formatter_class=fmt,
        description="Score a language-modelling task's split (the first such spec by default) as one document in\nrolling "
                    "windows: token and word perplexity, bits per byte. Each token is predicted once with at least\n"
                    "max-len - stride tokens of context (defaults: the model's window, half of it).\n\n"
                    "    gpt2suite perplexity --split test          # the README's language-modelling numbers")
    pp.add_argument("--task", help="a task scored as whole documents (default: the first such spec)")
    pp.add_argument("--split", help="scored split (default: the task's eval split)")
    pp.add_argument("--max-len", type=int, help="window length in tokens (default: the model's n_positions)")
    pp.add_argument("--stride", type=int, help="tokens a window advances (default: max-len // 2)")
    pp.add_argument("--max-chars", type=int, help="score only the first N characters (quick checks)")
    _model_args(pp)
    pp.set_defaults(func=cmd_perplexity)
