"""Pretraining checkpoints: `<out_dir>/checkpoints/step_XXXXXX/`, each a loadable model folder plus the state to
resume from bit-exactly.

A checkpoint folder holds the model (`save_pretrained`), the tokenizer, `pretrain_config.json` and
`trainer_state.pt` (a `TrainState`, the optimizer state and every RNG stream). It is built beside and swapped into
place (`gpt2core.io.atomic_write_dir`), so a listed checkpoint is always complete; a damaged one (unreadable, missing
tensors, NaN/inf weights) is named in a `CheckpointCorrupt` error and left in place, never deleted (a resume falls
back to the previous one). Weights of another vocabulary or model size are a `CheckpointError`: nothing to fall
back to, the run's config differs. (FSDP runs write sharded checkpoints instead: `gpt2core.pretrain.sharding`.)
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt2core.checkpoint import check_weights, read_folder_weights
from gpt2core.errors import CheckpointCorrupt, CheckpointError
from gpt2core.io import atomic_write_dir
from gpt2core.pretrain.batches import DATA_SCHEME
from gpt2core.pretrain.config import PretrainConfig

__all__ = ["CORRUPT_HINT", "CheckpointCorrupt", "TrainState", "checkpoint_path", "list_checkpoints",
           "load_training_state", "load_weights", "prune_checkpoints", "save_checkpoint"]

_STEP_DIR = re.compile(r"^step_(\d+)$")
CORRUPT_HINT = "it is left in place; delete or move it to resume from the previous checkpoint"


@dataclass
class TrainState:
    """Where a run stands (`step`, `tokens`, `elapsed` seconds over all its runs) and what it was written with."""

    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0
    world_size: int | None = None
    tokens_per_step: int | None = None
    seed: int | None = None
    data: str = DATA_SCHEME
    corpus_key: str | None = None


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints (step_XXXXXX folders; half-written ones are hidden temp folders), oldest first."""
    root = out_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def save_checkpoint(out_dir: Path, model: Any, tokenizer: Any, optimizer: torch.optim.Optimizer, state: TrainState,
                    cfg: PretrainConfig) -> Path:
    """Write `checkpoints/step_<state.step>/` atomically, then keep only the newest `cfg.keep_last_k`."""

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, max_shard_size=cfg.max_shard_size)
        tokenizer.save_pretrained(tmp)
        torch.save({**dataclasses.asdict(state), "optimizer": optimizer.state_dict(), "rng": rng_state()},
                   tmp / "trainer_state.pt")
        (tmp / "pretrain_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))

    final = atomic_write_dir(checkpoint_path(out_dir, state.step), fill)
    prune_checkpoints(out_dir, cfg.keep_last_k)
    return final


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return out_dir / "checkpoints" / f"step_{step:06d}"


def prune_checkpoints(out_dir: Path, keep_last_k: int) -> None:
    """Keep only the newest `keep_last_k` checkpoints."""
    for old in list_checkpoints(out_dir)[:-keep_last_k]:
        shutil.rmtree(old, ignore_errors=True)


def load_weights(path: Path, model: Any) -> None:
    """Load a checkpoint's (or a model folder's) weights into `model` in place (plain or sharded by FSDP).

    Weights of another shape (a checkpoint of another vocabulary or model size) are a `CheckpointError`; missing
    tensors, NaN/inf values and unreadable files are a `CheckpointCorrupt` (a resume falls back past those)."""
    state_dict = read_folder_weights(path, CORRUPT_HINT, CheckpointCorrupt)
    if not state_dict:
        raise CheckpointCorrupt(f"checkpoint {path} holds no *.safetensors weights; {CORRUPT_HINT}")
    tied = frozenset({"lm_head.weight"} if model.config.tie_word_embeddings else ())
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    fit = ("this run builds its model from the config and the corpus tokenizer; start from a checkpoint of the same "
           f"vocabulary and model settings, or train with the checkpoint's tokenizer "
           f"(--set corpus.tokenizer.path={path})")
    check_weights(state_dict, expected, f"checkpoint {path}", fit, CheckpointCorrupt, tied, CORRUPT_HINT)
    if is_sharded_model(model):  # FSDP: each rank keeps its shard of the full tensors
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state_dict, options=StateDictOptions(full_state_dict=True, strict=False))
        return
    model.load_state_dict(state_dict, strict=False)
    if model.config.tie_word_embeddings:
        model.tie_weights()


def is_sharded_model(model: Any) -> bool:
    """Whether `model`'s parameters are FSDP shards (DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def load_training_state(path: Path, model: Any, optimizer: torch.optim.Optimizer) -> TrainState:
    """Restore everything a checkpoint holds: weights and optimizer in place, every RNG stream; returns its state."""
    load_weights(path, model)
    try:
        saved = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
        _check_optimizer_kind(path, saved.get("optimizer"), optimizer)
        optimizer.load_state_dict(saved["optimizer"])
    except FileNotFoundError:
        raise CheckpointCorrupt(f"checkpoint {path} has no trainer_state.pt; {CORRUPT_HINT}") from None
    except CheckpointError:
        raise  # a setting that differs from the checkpoint's is not damage: no fallback to older ones
    except Exception as e:  # torch.load raises many types for a damaged pickle/zip
        raise CheckpointCorrupt(f"checkpoint {path / 'trainer_state.pt'} is corrupt ({type(e).__name__}: {e}); "
                                f"{CORRUPT_HINT}") from e
    set_rng_state(saved["rng"])
    names = {f.name for f in dataclasses.fields(TrainState)}
    return TrainState(**{k: v for k, v in saved.items() if k in names})


def _optimizer_kind(state: Any) -> str:
    # the Muon + AdamW pair saves both states under their names; a single optimizer saves torch's usual layout
    return "muon" if isinstance(state, dict) and set(state) == {"adamw", "muon"} else "adamw"


def _check_optimizer_kind(path: Path, saved: Any, optimizer: Any) -> None:
    check_optimizer_kind(path, _optimizer_kind(saved), _optimizer_kind(optimizer.state_dict()))


def check_optimizer_kind(path: Path, theirs: str, ours: str) -> None:
    if ours != theirs:
        raise CheckpointError(f"checkpoint {path} was trained with `optimizer: {theirs}` but this run uses "
                              f"`optimizer: {ours}`; set optimizer: {theirs} to resume it, or choose another out_dir "
                              "to start fresh")


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        # numpy's state as tensors and plain values, so that torch.load(weights_only=True) can read it back
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": np_state[2],
                  "has_gauss": np_state[3], "cached_gaussian": np_state[4]},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
