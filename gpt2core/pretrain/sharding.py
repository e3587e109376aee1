"""Sharded (`parallelism: fsdp`) pretraining checkpoints with torch.distributed.checkpoint (DCP), the full model
gathered from the shards, and `consolidate`: a sharded checkpoint as one plain `GPT2LMModel` in one process.

A sharded checkpoint `<out_dir>/checkpoints/step_XXXXXX/` holds

    sharded/               DCP: `.metadata` + one `__<rank>_0.distcp` per rank (its shards of model and optimizer)
    model_config.json      the model's config (what `consolidate` builds before filling it)
    trainer_state.pt       the `TrainState`, the optimizer's kind and every rank's RNG streams
    pretrain_config.json   and the tokenizer's files

All ranks write into one hidden temporary folder that rank 0 made; when every rank is done, rank 0 renames it into
place (`gpt2core.io.atomic_write_dir`), so a listed checkpoint is complete, as a DDP checkpoint is. (The ranks must
share the file system: one machine, or a shared `out_dir`.) DCP reshards on load: a sharded checkpoint resumes on
another number of ranks or in a DDP run, and `consolidate` reads it in a single process. A DDP checkpoint resumes in
an FSDP run too (`load_whole_into_sharded`).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from gpt2core.checkpoint import check_weights, save_hf_folder
from gpt2core.config import GPT2Config
from gpt2core.errors import CheckpointCorrupt, CheckpointError
from gpt2core.io import atomic_write_dir
from gpt2core.model import GPT2LMModel
from gpt2core.pretrain.checkpoints import (
    CORRUPT_HINT,
    TrainState,
    check_optimizer_kind,
    checkpoint_path,
    load_training_state,
    prune_checkpoints,
    rng_state,
    set_rng_state,
)
from gpt2core.pretrain.config import PretrainConfig
from gpt2core.pretrain.distributed import Dist, any_rank, barrier, broadcast_object
from gpt2core.pretrain.optim import MuonWithAdamW, make_optimizer
from gpt2core.tokenizer import load_tokenizer

__all__ = ["SHARDED_DIR", "consolidate", "full_model", "is_sharded_checkpoint", "load_sharded_state",
           "load_whole_into_sharded", "local", "save_sharded_checkpoint", "whole"]

SHARDED_DIR = "sharded"


def is_sharded_checkpoint(path: Path) -> bool:
    return (Path(path) / SHARDED_DIR).is_dir()


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a (possibly sharded) tensor."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def whole(t: torch.Tensor) -> torch.Tensor:
    """The full value of a (possibly sharded) tensor, on every rank (collective for a DTensor)."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def _optimizers(optimizer: Any) -> list[torch.optim.Optimizer]:
    # MuonWithAdamW is two torch optimizers behind one interface; DCP's state-dict helpers take the list
    return [optimizer.adamw, optimizer.muon] if isinstance(optimizer, MuonWithAdamW) else [optimizer]


def _kind(optimizer: Any) -> str:
    return "muon" if isinstance(optimizer, MuonWithAdamW) else "adamw"


def save_sharded_checkpoint(out_dir: Path, model: torch.nn.Module, tokenizer: Any, optimizer: Any,
                            state: TrainState, cfg: PretrainConfig, d: Dist) -> Path:
    """Every rank writes its shards of `checkpoints/step_<state.step>/` (collective: call it on all ranks); rank 0
    renames the folder into place once all are done and keeps the newest `cfg.keep_last_k`."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, _optimizers(optimizer))
    rngs: list[Any] = [None] * d.world
    dist.all_gather_object(rngs, rng_state())
    final = checkpoint_path(out_dir, state.step)

    def fill(tmp: Path | None) -> None:
        tmp = broadcast_object(tmp, d)  # rank 0 made the temporary folder; everyone writes into it
        dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=tmp / SHARDED_DIR)
        if d.is_main:
            (tmp / "model_config.json").write_text(model.config.to_json_string())
            tokenizer.save_pretrained(tmp)
            torch.save({**dataclasses.asdict(state), "parallelism": "fsdp", "optimizer_kind": _kind(optimizer),
                        "rng": rngs}, tmp / "trainer_state.pt")
            (tmp / "pretrain_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
        barrier(d)  # every rank's files are complete before rank 0 renames the folder

    if d.is_main:
        atomic_write_dir(final, fill)
        prune_checkpoints(out_dir, cfg.keep_last_k)
    else:
        fill(None)
    barrier(d)
    return final


def _check_shapes(path: Path, model: torch.nn.Module, error_hint: str) -> None:
    """The checkpoint's tensors against the model's (global) shapes, read from DCP's metadata before any load."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(path / SHARDED_DIR)).read_metadata().state_dict_metadata
    except Exception as e:  # a missing or damaged .metadata: pickle, OS and DCP errors of many types
        raise CheckpointCorrupt(f"checkpoint {path / SHARDED_DIR} has no readable .metadata ({type(e).__name__}: "
                                f"{e}); {CORRUPT_HINT}") from e
    # shapes only (int8 meta tensors: no data, no NaN check); the values are checked after loading
    saved = {k.removeprefix("model."): torch.empty(tuple(v.size), dtype=torch.int8, device="meta")
             for k, v in metadata.items() if k.startswith("model.") and hasattr(v, "size")}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = frozenset({"lm_head.weight"} if model.config.tie_word_embeddings else ())
    check_weights(saved, expected, f"checkpoint {path}", error_hint, CheckpointCorrupt, tied, CORRUPT_HINT)


def _dcp_load(state_dict: dict[str, Any], path: Path, no_dist: bool) -> None:
    """`dcp.load` in place (collective unless `no_dist`); any damage is a `CheckpointCorrupt` on every rank."""
    import torch.distributed.checkpoint as dcp

    try:
        with warnings.catch_warnings():  # "... assuming the intent is to load in a single process": it is
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state_dict, checkpoint_id=path / SHARDED_DIR, no_dist=no_dist)
    except (Exception, dcp.CheckpointException) as e:  # (a BaseException) DCP raises every rank's errors on all
        why = " ".join(str(e).split())[:500]
        raise CheckpointCorrupt(f"checkpoint {path / SHARDED_DIR} cannot be read ({type(e).__name__}: {why}); "
                                f"{CORRUPT_HINT}") from e


def load_sharded_state(path: Path, model: torch.nn.Module, optimizer: Any, d: Dist,
                       device: torch.device) -> TrainState:
    """Restore a sharded checkpoint into `model` and `optimizer` (sharded by FSDP, or whole: DCP reshards) and every
    RNG stream; returns its `TrainState`. Collective under torchrun. Damage is a `CheckpointCorrupt` on every rank."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    try:
        saved = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointCorrupt(f"checkpoint {path} has no trainer_state.pt; {CORRUPT_HINT}") from None
    except Exception as e:  # torch.load raises many types for a damaged pickle/zip
        raise CheckpointCorrupt(f"checkpoint {path / 'trainer_state.pt'} is corrupt ({type(e).__name__}: {e}); "
                                f"{CORRUPT_HINT}") from e
    check_optimizer_kind(path, saved.get("optimizer_kind", "adamw"), _kind(optimizer))
    _check_shapes(path, model, "this run builds its model from the config and the corpus tokenizer; resume with the "
                  "checkpoint's settings (its pretrain_config.json), or choose another out_dir to start fresh")
    optimizers = _optimizers(optimizer)
    model_sd, optim_sd = get_state_dict(model, optimizers)
    _dcp_load({"model": model_sd, "optimizer": optim_sd}, path, no_dist=not d.enabled)
    set_state_dict(model, optimizers, model_state_dict=model_sd, optim_state_dict=optim_sd)
    bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(local(p)).all())]
    if any_rank(bool(bad), d, device):
        raise CheckpointCorrupt(f"weights in checkpoint {path} hold NaN or inf values (e.g. "
                                f"{bad[0] if bad else 'on another rank'}): they come from a diverged run; "
                                f"{CORRUPT_HINT}")
    rngs = saved["rng"]
    set_rng_state(rngs[d.rank] if d.rank < len(rngs) else rngs[0])
    names = {f.name for f in dataclasses.fields(TrainState)}
    return TrainState(**{k: v for k, v in saved.items() if k in names})


def load_whole_into_sharded(path: Path, model: torch.nn.Module, optimizer: Any, cfg: PretrainConfig) -> TrainState:
    """Resume a DDP checkpoint (whole weights and optimizer state) in an FSDP run: each rank reads it into a plain
    model and optimizer on its CPU (`load_training_state`: the same checks and errors), then keeps its shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    plain = GPT2LMModel(model.config)
    plain_optimizer = make_optimizer(plain, cfg, "cpu")
    state = load_training_state(path, plain, plain_optimizer)
    full = StateDictOptions(full_state_dict=True)
    model_sd, optim_sd = get_state_dict(plain, _optimizers(plain_optimizer), options=full)
    set_state_dict(model, _optimizers(optimizer), model_state_dict=model_sd, optim_state_dict=optim_sd, options=full)
    return state


def full_model(model: torch.nn.Module, d: Dist) -> GPT2LMModel | None:
    """The whole model, gathered from the shards (collective), as one plain `GPT2LMModel` on rank 0's CPU; None
    on the other ranks. Each tensor goes to rank 0's CPU memory as it is gathered, so no device holds it all."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state_dict = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not d.is_main:
        return None
    with torch.device("meta"):  # no initialisation: every tensor comes from the state dict
        plain = GPT2LMModel(model.config)
    plain.load_state_dict(state_dict, assign=True)
    if plain.config.tie_word_embeddings:
        plain.tie_weights()
    return plain.train(model.training)


def consolidate(checkpoint_dir: str | Path, out_dir: str | Path | None = None) -> GPT2LMModel:
    """A sharded checkpoint's weights as one `GPT2LMModel` on the CPU of this single process (no torchrun needed);
    with `out_dir`, also written there as a vanilla Hugging Face GPT-2 folder with the checkpoint's tokenizer."""
    path = Path(checkpoint_dir)
    if not is_sharded_checkpoint(path):
        raise CheckpointError(f"{path} is not a sharded checkpoint (it has no {SHARDED_DIR}/ folder); a DDP "
                              "checkpoint is a model folder already: open it with gpt2core.checkpoint.load_model")
    try:
        config = GPT2Config.from_json_file(path / "model_config.json")
    except (OSError, ValueError) as e:
        raise CheckpointCorrupt(f"checkpoint {path} has no readable model_config.json ({e}); {CORRUPT_HINT}") from e
    model = GPT2LMModel(config)
    _check_shapes(path, model, "the checkpoint's model_config.json does not describe its weights")
    state_dict = model.state_dict()  # the parameters themselves: loading fills them in place
    _dcp_load({"model": state_dict}, path, no_dist=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    if out_dir is not None:
        save_hf_folder(model, load_tokenizer(path), out_dir)
    return model.eval()
