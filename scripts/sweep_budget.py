"""Token budget that gives a pretraining config a fixed compute budget (nanoGPT's 6N + 12LHQT FLOPs per token).

    python scripts/sweep_budget.py configs/pretrain/sweep/m_v8k.yaml 5e14 --set seq_len=512   # prints tokens
"""

from __future__ import annotations

import argparse

import yaml

from gpt2core.config import GPT2Config
from gpt2core.pretrain.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("flops", type=float)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    cfg = load_config(args.config, overrides)
    vocab = cfg.model.get("vocab_size") or cfg.corpus.tokenizer.vocab_size
    config = GPT2Config.from_preset(cfg.preset, **{**cfg.model, "vocab_size": vocab})
    print(int(args.flops / config.flops_per_token(cfg.seq_len)))


if __name__ == "__main__":
    main()
