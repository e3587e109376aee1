"""The `gpt2suite` command line.

Each subcommand imports what it needs when it runs, so `gpt2suite --help` stays fast (transformers, peft
and evaluate take seconds to import).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gpt2core.cli import run_command, set_offline_defaults

set_offline_defaults()


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from gpt2core.checkpoint import load_model
    from gpt2core.tokenizer import load_tokenizer

    model = load_model(args.model, device=args.device)
    tokenizer = load_tokenizer(args.tokenizer or args.model)
    ids = tokenizer(args.prompt, return_tensors="pt").input_ids.to(args.device)
    if ids.shape[1] == 0:
        ids = torch.tensor([[tokenizer.eos_token_id]], device=args.device)  # unconditional sample
    out = model.generate(
        ids,
        max_new_tokens=args.max_new_tokens,
        do_sample=args.temperature > 0,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop_strings=args.stop or None,
        tokenizer=tokenizer,
    )
    print(args.prompt + tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True))
    return 0


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from gpt2core.tokenizer import train_tokenizer

    tok = train_tokenizer(args.files, args.vocab_size, args.out, min_frequency=args.min_frequency)
    print(f"trained a byte-level BPE of {len(tok)} tokens -> {args.out}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    import shutil

    import torch

    from gpt2core.checkpoint import load_model, save_hf_folder
    from gpt2core.errors import ConfigError
    from gpt2core.pretrain.sharding import consolidate, is_sharded_checkpoint
    from gpt2core.tokenizer import load_tokenizer

    src, out = Path(args.model), Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"--out {out} exists; pass --overwrite to replace it (or choose another folder)")
    # a sharded (FSDP) training checkpoint is gathered into one model first
    model = consolidate(src) if is_sharded_checkpoint(src) else load_model(src)
    tokenizer = load_tokenizer(args.tokenizer or args.model)

    def side_files(tmp: Path) -> None:  # a card, plots and logs beside the weights travel with them
        if not src.is_dir():
            return
        for f in sorted(src.iterdir()):
            if f.is_file() and f.suffix in (".md", ".png", ".jsonl") or f.name.startswith("pretrain_"):
                shutil.copy2(f, tmp / f.name)

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    save_hf_folder(model, tokenizer, out, max_shard_size=args.max_shard_size, dtype=dtype, extra=side_files)
    print(f"{src} -> {out}: a vanilla Hugging Face GPT-2 folder ({model.num_parameters():,} parameters, {args.dtype})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpt2suite", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="continue a prompt with a model folder")
    gen.add_argument("--model", required=True, help="model folder (ours or a Hugging Face GPT-2)")
    gen.add_argument("--tokenizer", help="tokenizer folder (default: the model folder)")
    gen.add_argument("--prompt", default="", help="text to continue (empty: sample from <|endoftext|>)")
    gen.add_argument("--max-new-tokens", type=int, default=50)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--stop", action="append", help="stop string (repeatable)")
    gen.add_argument("--device", default="cpu")
    gen.set_defaults(func=cmd_generate)

    conv = sub.add_parser("convert", help="write a model as a vanilla Hugging Face GPT-2 folder (model_type gpt2)",
                          description="Any folder load_model reads (ours, a transformers GPT-2, a hub name) or a sharded "
                                      "(FSDP) training checkpoint -> a "
                                      "GPT2LMHeadModel folder that plain transformers and lm-evaluation-harness "
                                      "open. Cards, plots and logs beside the weights are copied along.")
    conv.add_argument("--model", required=True, help="model folder or hub name")
    conv.add_argument("--tokenizer", help="tokenizer folder (default: the model folder)")
    conv.add_argument("--out", required=True, help="output folder")
    conv.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp32", help="storage precision")
    conv.add_argument("--max-shard-size", default="16MB")
    conv.add_argument("--overwrite", action="store_true", help="replace --out if it exists (atomically)")
    conv.set_defaults(func=cmd_convert)

    tok = sub.add_parser("tokenizer", help="tokenizer tools")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", required=True)
    train = tok_sub.add_parser("train", help="train a GPT-2 byte-level BPE on text files")
    train.add_argument("files", nargs="+", help=".txt, .txt.gz or JSONL (text field) files")
    train.add_argument("--vocab-size", type=int, required=True)
    train.add_argument("--out", required=True, help="output folder (vocab.json + merges.txt + tokenizer.json)")
    train.add_argument("--min-frequency", type=int, default=2)
    train.set_defaults(func=cmd_tokenizer_train)

    from gpt2core.pretrain.cli import add_pretrain_parser
    from tasks.cli.prompting import add_fewshot_parsers
    from tasks.cli.extractive import add_extractive_parsers
    from tasks.cli.finetune import add_finetune_parsers
    from tasks.leaderboard.cli import add_leaderboard_parser

    add_pretrain_parser(sub)
    add_finetune_parsers(sub)
    add_extractive_parsers(sub)
    add_fewshot_parsers(sub)
    add_leaderboard_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
