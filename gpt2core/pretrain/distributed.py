"""Processes and devices: one process per device under `torchrun` (DDP), or a single process.

Everything here is a no-op for a single process, so the training loop reads the same either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from gpt2core.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    """This process' place among the training processes (torchrun's RANK / WORLD_SIZE / LOCAL_RANK)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str) -> Dist:
    """Join the process group when started by torchrun (NCCL on CUDA, gloo on CPU); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    use_cuda = device_pref != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), True)


def shutdown(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.destroy_process_group()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The device of this process: `auto` is CUDA when torch sees one; under DDP each rank takes its own GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device: cuda was asked for but torch sees no CUDA device; use device: cpu")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_mean(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t = t / d.world
    return t


def any_rank(flag: bool, d: Dist, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any, so that all ranks stop at the same step."""
    t = torch.tensor(float(flag), device=device)
    if d.enabled:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def wrap_model(model: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    """`model` in DistributedDataParallel under DDP, else as it is."""
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
