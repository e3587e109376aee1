"""Fine-tuning throughput: `gpt2suite finetune` (tasks.methods.finetune.run.finetune, full fine-tuning of a
classification task) vs transformers' own path at the same settings: `GPT2ForSequenceClassification` built from
the same backbone folder, a plain `Trainer` with its default dynamic-padding collator, the same training rows
(the suite's seeded subset), batch size, max length, lr, warmup, steps, threads and bf16 choice.

    .venv/bin/python bench/finetune.py [--task sst2] [--train-examples 2000] [--steps 40] [--batch 32]
        [--max-length 128] [--threads 1] [--bf16 auto|on|off] [--rounds 1] [--set key=value ...]
        [--hf-group-by-length]

The suite groups batches by length (`group_by_length`, default on); plain Trainer does not unless
`--hf-group-by-length` gives it `train_sampling_strategy="group_by_length"` (the like-for-like loop comparison).

Tokens/s = non-padding training tokens / seconds of the training phase (`trainer.train()`: for the suite that
includes its evaluations on validation, best-checkpoint selection and checkpoints, which are part of its cost).
The suite's end-to-end time (data, model, training, saving, test-split scoring) is printed too. With `--rounds`
> 1 the two sides alternate (so background load hits both alike) and the median per-round ratio is reported. The
last line is exactly `ratio=<suite/transformers>`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def suite_run(args, bf16: bool, tmp: Path) -> dict:
    from tasks.methods.finetune import finetune, load_finetune_config

    overrides = {"max_train_examples": args.train_examples, "max_steps": args.steps, "batch_size": args.batch,
                 "max_length": args.max_length, "lr": args.lr, "warmup": args.warmup, "threads": args.threads,
                 "bf16": bf16, "progress": False, "max_eval_examples": args.eval_examples, "seed": args.seed}
    overrides.update({k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.set)})
    cfg = load_finetune_config(args.task, "full", overrides=overrides)
    t0 = time.perf_counter()
    record = finetune(args.task, "full", args.model, cfg, out_dir=tmp / "suite", runs_dir=tmp / "records")
    total = time.perf_counter() - t0
    return {"tokens": record.tokens_seen, "seconds": record.train_seconds, "total": total,
            "steps": record.details["training"]["global_steps"],
            "evals": len(record.details["training"]["log"])}


def hf_run(args, bf16: bool, tmp: Path) -> dict:
    import torch
    from transformers import (AutoTokenizer, DataCollatorWithPadding, GPT2ForSequenceClassification, Trainer,
                              TrainingArguments)

    from tasks.data.load import load_split
    from tasks.data.registry import get_task
    from tasks.evaluation.predict import seeded_subset

    spec = get_task(args.task)
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = seeded_subset(load_split(spec, spec.train_split), args.train_examples, args.seed)

    def encode(batch):
        enc = tokenizer(batch["text"], truncation=True, max_length=args.max_length)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": batch["label"]}

    ds = rows.map(encode, batched=True, remove_columns=rows.column_names)
    model = GPT2ForSequenceClassification.from_pretrained(args.model, num_labels=len(spec.labels),
                                                          pad_token_id=tokenizer.pad_token_id, dtype=torch.float32)
    targs = TrainingArguments(
        output_dir=str(tmp / "hf"), per_device_train_batch_size=args.batch, learning_rate=args.lr,
        max_steps=args.steps, warmup_steps=args.warmup, lr_scheduler_type="linear", save_strategy="no",
        eval_strategy="no", logging_steps=10, report_to=[], use_cpu=not torch.cuda.is_available(), bf16=bf16,
        seed=args.seed, data_seed=args.seed, disable_tqdm=True, include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if args.hf_group_by_length else "random")
    trainer = Trainer(model=model, args=targs, train_dataset=ds, data_collator=DataCollatorWithPadding(tokenizer))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    return {"tokens": int(trainer.state.num_input_tokens_seen), "seconds": seconds, "total": seconds,
            "steps": trainer.state.global_step, "evals": 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "results" / "backbones" / "default"))
    ap.add_argument("--train-examples", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=float, default=0.06)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                    help="auto: the suite's own choice (tasks.methods.finetune.trainer.use_bf16), for both sides")
    ap.add_argument("--eval-examples", type=int, default=64, help="test-split rows the suite scores after training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--hf-group-by-length", action="store_true",
                    help="give the transformers side length-grouped batches too (train_sampling_strategy)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a suite config override (e.g. eval_steps=20); the transformers side ignores it")
    args = ap.parse_args()

    import torch

    from tasks.methods.finetune.config import FinetuneConfig
    from tasks.methods.finetune.trainer import use_bf16

    torch.set_num_threads(args.threads)
    bf16 = {"on": True, "off": False}.get(args.bf16, None)
    bf16 = use_bf16(FinetuneConfig(bf16=bf16))
    rates: dict[str, list[float]] = {"suite": [], "transformers": []}
    runs: dict[str, list[dict]] = {"suite": [], "transformers": []}
    for r in range(args.rounds):
        order = [("suite", suite_run), ("transformers", hf_run)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
                res = fn(args, bf16, Path(tmp))
            runs[name].append(res)
            rates[name].append(res["tokens"] / res["seconds"])
            print(f"round {r}: {name:12s} {res['tokens'] / res['seconds']:8.0f} tok/s  {res['tokens']} tokens, "
                  f"{res['steps']} steps, {res['evals']} evaluations, train {res['seconds']:.1f}s, "
                  f"end-to-end {res['total']:.1f}s", flush=True)
    print(f"task={args.task} full fine-tuning, {args.train_examples} train examples, {args.steps} steps x batch "
          f"{args.batch}, max_length {args.max_length}, threads={args.threads}, bf16={bf16}, rounds={args.rounds}"
          + (f", suite overrides {' '.join(args.set)}" if args.set else "")
          + (", transformers side length-grouped" if args.hf_group_by_length else ""))
    a, b = statistics.median(rates["suite"]), statistics.median(rates["transformers"])
    print(f"suite:        {a:8.0f} tok/s (training phase)")
    print(f"transformers: {b:8.0f} tok/s (GPT2ForSequenceClassification + Trainer)")
    paired = statistics.median(s / t for s, t in zip(rates["suite"], rates["transformers"]))
    print(f"ratio={paired:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
