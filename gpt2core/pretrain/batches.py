"""Training and validation batches: windows of `seq_len + 1` tokens sampled from a prepared corpus' memmaps.

Data order is a function of (seed, step) alone: the batch of optimizer step `k` takes `micro_batch_size *
grad_accum * world_size` windows at offsets drawn from a generator seeded by (seed, k). Row block `(micro * world +
rank)` goes to that rank's micro-step, so one process with `grad_accum * K` sees the same global batch as K
processes, and a resumed run sees exactly the batches the uninterrupted one would have.
"""

from __future__ import annotations

import numpy as np
import torch

from gpt2core.errors import CorpusError
from gpt2core.pretrain.config import PretrainConfig

# Recorded in every checkpoint: a resumed run must draw its batches by the same rule.
DATA_SCHEME = "random-offsets-v1: step k draws its windows from torch.Generator().manual_seed((seed << 32) + k)"


class Batches:
    """Deterministic training and validation windows from token memmaps."""

    def __init__(self, train: np.ndarray, val: np.ndarray, cfg: PretrainConfig, rank: int = 0, world: int = 1):
        self.train, self.val, self.cfg, self.rank, self.world = train, val, cfg, rank, world
        for name, arr in (("train", train), ("val", val)):
            if len(arr) < cfg.seq_len + 2:
                raise CorpusError(f"the {name} split holds {len(arr)} tokens, fewer than seq_len + 2 = "
                                  f"{cfg.seq_len + 2}; use more text or a shorter seq_len")

    def _rows(self, arr: np.ndarray, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.cfg.seq_len
        rows = np.stack([arr[o:o + T + 1] for o in offsets.tolist()]).astype(np.int64)
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]  # inputs, targets: (B, T) each

    def train_batch(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of micro-step `micro` of optimizer step `step`."""
        cfg, mb = self.cfg, self.cfg.micro_batch_size
        g = torch.Generator().manual_seed((cfg.seed << 32) + step)
        offsets = torch.randint(0, len(self.train) - cfg.seq_len - 1, (mb * cfg.grad_accum * self.world,),
                                generator=g)
        block = micro * self.world + self.rank
        return self._rows(self.train, offsets[block * mb:(block + 1) * mb])

    def val_batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Validation batch `i`: the same windows in every run of a config."""
        cfg = self.cfg
        g = torch.Generator().manual_seed((cfg.seed << 32) + (1 << 31) + i)
        offsets = torch.randint(0, len(self.val) - cfg.seq_len - 1, (cfg.eval_batch_size or cfg.micro_batch_size,),
                                generator=g)
        return self._rows(self.val, offsets)
