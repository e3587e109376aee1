"""`gpt2suite pretrain`: prepare a corpus and pretrain a GPT-2 backbone from a YAML config.

    gpt2suite pretrain --config configs/pretrain/tiny.yaml [--resume] [--max-steps N] [--out DIR] [--set KEY=VALUE]
    gpt2suite pretrain --config configs/pretrain/default.yaml --prepare-only [--export-shards .dev/shards]
    torchrun --standalone --nproc_per_node=2 -m gpt2core.pretrain.cli pretrain --config ...   (DDP)
    torchrun --standalone --nproc_per_node=8 -m gpt2core.pretrain.cli pretrain --config ... --set parallelism=fsdp

Also runnable without the suite's CLI: `python -m gpt2core.pretrain.cli pretrain ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any


def add_pretrain_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("pretrain", help="prepare a corpus and pretrain a GPT-2 backbone",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML file (configs/pretrain/*.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the output folder")
    p.add_argument("--init-from", metavar="DIR",
                   help="start from this checkpoint (full state) or model folder (weights only)")
    p.add_argument("--max-steps", type=int, help="override max_steps")
    p.add_argument("--max-tokens", type=int, help="override max_tokens")
    p.add_argument("--max-time-minutes", type=float, help="stop cleanly (with a checkpoint) after this long")
    p.add_argument("--out", help="override out_dir")
    p.add_argument("--device", help="override device (auto, cpu, cuda)")
    p.add_argument("--dtype", help="override dtype (auto, fp32, bf16; auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--seed", type=int, help="override seed")
    p.add_argument("--shards", metavar="DIR", help="use this prepared corpus or packed shards folder as the corpus")
    p.add_argument("--plot", metavar="PNG", help="also write the loss plot here")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, dotted, value in YAML (e.g. --set corpus.tokenizer.vocab_size=16384)")
    p.add_argument("--prepare-only", action="store_true", help="prepare (or find) the token shards and stop")
    p.add_argument("--export-shards", metavar="DIR",
                   help="with --prepare-only: also pack the prepared corpus into DIR (xz) for transfer")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_pretrain)
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from gpt2core.errors import ConfigError

    out: dict[str, Any] = {}
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. --set max_steps=20)")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({e})") from None
    for name, key in (("max_steps", "max_steps"), ("max_tokens", "max_tokens"), ("out", "out_dir"),
                      ("device", "device"), ("dtype", "dtype"), ("seed", "seed"), ("plot", "plot_path"),
                      ("max_time_minutes", "max_time_minutes"), ("shards", "corpus.prepared_dir")):
        if getattr(args, name) is not None:
            out[key] = getattr(args, name)
    if args.max_steps is not None and args.max_tokens is None:
        out["max_tokens"] = None  # an explicit step count wins over a config's token budget
    if args.no_progress:
        out["progress"] = False
    return out


def run_pretrain(args: argparse.Namespace) -> int:
    from gpt2core.errors import CheckpointCorrupt, ConfigError, TrainingDiverged
    from gpt2core.pretrain.config import load_config
    from gpt2core.pretrain.corpus import prepare_corpus
    from gpt2core.pretrain.loop import train
    from gpt2core.pretrain.prepared import pack_shards, read_manifest

    cfg = load_config(args.config, _overrides(args))
    if args.export_shards and not args.prepare_only:
        raise ConfigError("--export-shards goes with --prepare-only: add --prepare-only, or drop --export-shards")
    if args.prepare_only:
        folder = prepare_corpus(cfg.corpus, progress=cfg.progress)
        m = read_manifest(folder)
        print(f"{folder}: {m['tokens']['train']:,} train + {m['tokens']['val']:,} val tokens ({m['dtype']}, "
              f"vocab {m['vocab_size']}, tokenizer {m['tokenizer_hash']})")
        if args.export_shards:
            dest = pack_shards(folder, args.export_shards)
            if cfg.ppl_eval:  # the held-out perplexity texts travel with the shards (a GPU box has no shared/)
                import shutil
                from pathlib import Path

                from gpt2core.paths import expand_path

                (dest / "heldout").mkdir(exist_ok=True)
                for f in cfg.ppl_eval:
                    shutil.copyfile(expand_path(f), dest / "heldout" / f"{Path(f).parent.name}_{Path(f).name}")
            size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
            print(f"packed shards: {dest} ({size / 2**20:.1f} MiB)")
        return 0
    try:
        summary = train(cfg, resume=args.resume, init_from=args.init_from)
    except (TrainingDiverged, CheckpointCorrupt) as e:
        print(f"gpt2suite pretrain: error: {e}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "ppl_eval"}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from gpt2core.cli import run_command, set_offline_defaults

    set_offline_defaults()
    parser = argparse.ArgumentParser(prog="gpt2core.pretrain.cli")
    add_pretrain_parser(parser.add_subparsers(dest="command", required=True))
    return run_command(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
