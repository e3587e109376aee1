"""Processes and devices: one process per device under `torchrun` (DDP or FSDP), or a single process.

Everything here is a no-op for a single process, so the training loop reads the same either way. `parallelism:
fsdp` always runs in a process group (one process under `torchrun --nproc_per_node=1` is a group of one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

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


def init_distributed(device_pref: str, parallelism: str = "ddp") -> Dist:
    """Join the process group when started by torchrun (NCCL on CUDA, gloo on CPU); a single process otherwise.

    FSDP needs the group even for one process: started without torchrun, it is a `ConfigError`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if parallelism == "fsdp" and "LOCAL_RANK" not in os.environ:
        raise ConfigError("parallelism: fsdp shards the model over processes started by torchrun; run "
                          "`torchrun --standalone --nproc_per_node=N -m gpt2core.pretrain.cli pretrain ...` "
                          "(N = number of GPUs), or use parallelism: ddp for a single process")
    if world <= 1 and parallelism != "fsdp":
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


def broadcast_object(obj: Any, d: Dist) -> Any:
    """Rank 0's `obj` on every rank."""
    if not d.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """FSDP2: shard each transformer block, then the root (embeddings, tied LM head, final LayerNorm), over all
    ranks, in place. Each block's parameters are gathered just before its forward and backward and freed after,
    so a rank holds 1/world of the weights, gradients and optimizer state plus one block at a time.
    Build the optimizer after this: it must hold the sharded (DTensor) parameters."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def wrap_model(model: torch.nn.Module, d: Dist, device: torch.device, parallelism: str = "ddp") -> torch.nn.Module:
    """`model` in DistributedDataParallel under DDP; as it is for one process or FSDP (`shard_model` made it
    sharded in place already)."""
    if not d.enabled or parallelism == "fsdp":
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
