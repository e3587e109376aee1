"""Pretraining a GPT-2 backbone: corpus preparation, the training loop, held-out perplexity.

Entry points: `prepare_corpus(cfg.corpus)`, `train(cfg)`, `evaluate_perplexity(...)`, `load_config(path)`, and the
`pretrain` CLI (`gpt2core.pretrain.cli.add_pretrain_parser`). Heavy imports happen inside the functions.
"""

from typing import Any

from gpt2core.pretrain.config import ConfigError, CorpusConfig, KeepRule, PretrainConfig, SourceConfig, load_config
from gpt2core.pretrain.corpus import prepare_corpus
from gpt2core.pretrain.prepared import pack_shards, unpack_shards

__all__ = [
    "ConfigError",
    "CorpusConfig",
    "KeepRule",
    "PretrainConfig",
    "SourceConfig",
    "evaluate_perplexity",
    "load_config",
    "pack_shards",
    "prepare_corpus",
    "train",
    "unpack_shards",
]


def __getattr__(name: str) -> Any:
    if name == "train":
        from gpt2core.pretrain.loop import train

        return train
    if name == "evaluate_perplexity":
        from gpt2core.pretrain.evaluate import evaluate_perplexity

        return evaluate_perplexity
    raise AttributeError(name)
