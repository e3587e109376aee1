"""A preallocated key/value cache: what fast generation (and any scorer that extends a prefix) decodes with."""

from __future__ import annotations

from typing import Any

import torch

from gpt2core.config import GPT2Config


class KVCache:
    """Preallocated keys/values for every layer, written in place.

    transformers' `DynamicCache` concatenates a new tensor at every step; at small model sizes that and its
    bookkeeping cost more than the attention itself, so fast generation uses this instead. It has the same
    `update`/`get_seq_length` interface, so the model treats both alike.
    """

    def __init__(self, config: GPT2Config, batch_size: int, max_len: int, dtype: torch.dtype, device: torch.device):
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.n_embd // config.n_head)
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.lengths = [0] * config.n_layer
        self.max_len = max_len

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.lengths[layer_idx]

    def update(
        self, k: torch.Tensor, v: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.lengths[layer_idx], self.lengths[layer_idx] + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} were asked for")
        self.keys[layer_idx, :, :, start:end] = k
        self.values[layer_idx, :, :, start:end] = v
        self.lengths[layer_idx] = end
        return self.keys[layer_idx, :, :, :end], self.values[layer_idx, :, :, :end]
