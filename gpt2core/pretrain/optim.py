"""The optimizer and the learning-rate schedule of pretraining."""

from __future__ import annotations

import math

import torch

from gpt2core.pretrain.config import PretrainConfig


def lr_at(step: int, cfg: PretrainConfig, max_steps: int) -> float:
    """Linear warmup over `warmup_steps`, then cosine decay to `min_lr` at `lr_decay_steps` (default max_steps)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = cfg.lr_decay_steps or max_steps
    if step >= decay_steps:
        return cfg.min_lr
    ratio = (step - cfg.warmup_steps) / max(1, decay_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_optimizer(model: torch.nn.Module, cfg: PretrainConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW with weight decay on 2-D weights (matrices, embeddings) only; fused kernels on CUDA and CPU.

    On CPU the fused step of `mini` takes 7.5 ms against 46 ms for the default (foreach) one, 1 thread."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    extra = {"fused": True} if device_type in ("cuda", "cpu") else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **extra)
