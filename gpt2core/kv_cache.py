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
        # Keys and values of a layer side by side in one tensor, so a decoding step writes both with one copy
        # (`write_step`); `keys` and `values` are views of it.
        shape = (config.n_layer, 2, batch_size, config.n_head, max_len, config.n_embd // config.n_head)
        self.kv = torch.empty(shape, dtype=dtype, device=device)
        self.keys, self.values = self.kv[:, 0], self.kv[:, 1]
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

    def write_step(self, kv: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`update` for one new position, from keys and values together: `kv` (2, B, n_head, head_dim)."""
        pos = self.lengths[layer_idx]
        if pos >= self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {pos + 1} were asked for")
        self.kv[layer_idx, :, :, :, pos] = kv
        self.lengths[layer_idx] = pos + 1
        return self.keys[layer_idx, :, :, :pos + 1], self.values[layer_idx, :, :, :pos + 1]
