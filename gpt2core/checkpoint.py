"""Loading and saving model folders with errors that say what is wrong, and atomic writes.

A folder is checked before its weights go into a model: every tensor the model needs is there with its shape, and
none holds NaN or inf. (transformers would initialise a missing tensor at random and go on, which makes a damaged
folder look like a working model.)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from gpt2core.config import GPT2Config
from gpt2core.devices import check_device
from gpt2core.errors import CheckpointCorrupt, CheckpointError
from gpt2core.hf_interop import config_from_hf, convert_hf_state_dict
from gpt2core.io import atomic_write_dir
from gpt2core.model import GPT2LMModel
from gpt2core.tokenizer import save_tokenizer

__all__ = ["CheckpointCorrupt", "CheckpointError", "atomic_save_pretrained", "check_weights", "load_model",
           "read_folder_weights", "read_weights", "save_hf_folder"]

_TIED = frozenset({"lm_head.weight"})


def read_weights(
    folder: Path, hint: str, error: type[CheckpointError] = CheckpointError
) -> dict[str, torch.Tensor]:
    """Every `*.safetensors` file of `folder`, merged into one state dict (on CPU); a truncated or corrupt file
    is named in an `error` ending with `hint` (what to do), not left to a deep library error."""
    state_dict: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        try:
            state_dict.update(load_file(f, device="cpu"))
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            raise error(f"weights file {f} is truncated or corrupt ({e}); {hint}") from e
    return state_dict


def read_folder_weights(
    folder: Path, hint: str, error: type[CheckpointError] = CheckpointError
) -> dict[str, torch.Tensor]:
    """`read_weights` with our names and layouts, whether `folder` is ours (model_type "gpt2core") or a vanilla
    transformers GPT-2 folder (model_type "gpt2": Conv1D matrices transposed, `transformer.` prefixes)."""
    state_dict = read_weights(folder, hint, error)
    config_file = folder / "config.json"
    try:
        model_type = json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise error(f"{config_file} is not valid JSON ({e}); {hint}") from e
    return convert_hf_state_dict(state_dict) if model_type == "gpt2" else state_dict


def _names(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def check_weights(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], where: str,
                  hint: str, corrupt: type[CheckpointError] = CheckpointError, tied: frozenset[str] = _TIED,
                  corrupt_hint: str | None = None) -> None:
    """Refuse weights that would not load as they are into a model whose tensors have the `expected` shapes.

    Tensors of other shapes (another vocabulary, another size) or of other names are a `CheckpointError` ending with
    `hint`: the weights belong to another model. Missing tensors and NaN/inf values are a `corrupt` error ending with
    `corrupt_hint` (default `hint`): the folder is damaged.
    """
    corrupt_hint = corrupt_hint or hint
    mismatched = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k])]
    if mismatched:
        k = mismatched[0]
        what = f"{k} is {list(state_dict[k].shape)} there but {list(expected[k])} in the model"
        if k == "transformer.wte.weight" and state_dict[k].shape[1:] == tuple(expected[k][1:]):
            what = (f"it has a vocabulary of {state_dict[k].shape[0]} tokens, the model {expected[k][0]} "
                    f"({k} is {list(state_dict[k].shape)}, not {list(expected[k])})")
        more = f"; {len(mismatched) - 1} more tensors differ in shape" if len(mismatched) > 1 else ""
        raise CheckpointError(f"weights in {where} do not match the model: {what}{more}; {hint}")
    unexpected = sorted(set(state_dict) - set(expected))
    if unexpected:
        raise CheckpointError(f"weights in {where} hold {len(unexpected)} tensors the model does not have "
                              f"({_names(unexpected)}): they belong to another architecture; {hint}")
    missing = [k for k in expected if k not in state_dict and k not in tied]
    if missing:
        raise corrupt(f"weights in {where} lack {len(missing)} of the model's tensors ({_names(missing)}): the folder "
                      f"is incomplete or damaged; {corrupt_hint}")
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise corrupt(f"weights in {where} hold NaN or inf values in {len(bad)} tensors ({_names(bad)}): they come "
                      f"from a diverged run; {corrupt_hint}")


def expected_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of a `GPT2LMModel` of `config` (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        model = GPT2LMModel(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No "Loading weights" progress bar: a command's output (and its one-line errors) stays readable."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _load_folder(folder: Path, hint: str) -> GPT2LMModel:
    config_file = folder / "config.json"
    if (folder / "sharded").is_dir() and not config_file.exists():  # gpt2core.pretrain.sharding's layout
        raise CheckpointError(f"{folder} is a sharded (FSDP) training checkpoint, one file per rank: make it one "
                              f"model folder first with `gpt2suite convert --model {folder} --out <folder>`")
    if not config_file.exists():
        raise CheckpointError(f"{folder} has no config.json: it is not a saved model folder; {hint}")
    try:
        config_dict = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_file} is not valid JSON ({e}); restore it or save the model again") from e
    model_type = config_dict.get("model_type") if isinstance(config_dict, dict) else None
    restore = "restore it or point --model at another checkpoint"
    state_dict = read_weights(folder, restore)
    if not state_dict:
        raise CheckpointError(f"{folder} holds no *.safetensors weights; {restore}")
    try:
        if model_type == "gpt2":
            from transformers import GPT2Config as HFGPT2Config

            config = config_from_hf(HFGPT2Config.from_pretrained(folder))
            state_dict = convert_hf_state_dict(state_dict)
        elif model_type == GPT2Config.model_type:
            config = GPT2Config.from_pretrained(folder)
        else:
            raise CheckpointError(f"{config_file} has model_type={model_type!r}; expected 'gpt2core' or 'gpt2'")
    except (TypeError, ValueError, OSError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{config_file} is not a usable GPT-2 config ({e}); {restore}") from e
    check_weights(state_dict, expected_shapes(config), str(folder), restore)
    del state_dict
    if model_type == "gpt2":
        return GPT2LMModel.from_hf(folder)
    return GPT2LMModel.from_pretrained(folder)


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> GPT2LMModel:
    """A `GPT2LMModel` from one of our `save_pretrained` folders or a Hugging Face GPT-2 folder / hub name."""
    device = check_device(device)
    folder = Path(path)
    hint = "pass a folder written by save_pretrained (ours or a transformers GPT-2), or a hub name such as 'gpt2'"
    with _quiet_loading():
        if folder.is_dir():
            model = _load_folder(folder, hint)
        elif str(path).count("/") <= 1 and not str(path).startswith((".", "/", "~")):
            try:
                model = GPT2LMModel.from_hf(str(path))  # a hub name such as "gpt2" (needs network access)
            except OSError as e:  # transformers' "not found" / offline errors are OSErrors
                if _offline():
                    raise CheckpointError(
                        f"{str(path)!r} is neither a model folder here nor a Hugging Face model in the local cache "
                        "(hub downloads are off: HF_HUB_OFFLINE=1, gpt2suite's default); pass a folder written by "
                        "save_pretrained, or set HF_HUB_OFFLINE=0 on a machine with network access to download "
                        "a hub model such as 'gpt2'") from e
                why = " ".join(str(e).split())  # transformers' message spans lines; the command line prints one
                raise CheckpointError(f"{str(path)!r} is no model folder here and cannot be loaded from the Hugging "
                                      f"Face hub ({why}); {hint}") from e
        else:
            raise CheckpointError(f"model folder {folder} does not exist; {hint}")
    if dtype is None and model.dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32  # half-precision storage keeps folders small; compute stays fp32 unless asked
    return model.to(device=device, dtype=dtype).eval()


def save_hf_folder(model: GPT2LMModel, tokenizer: Any, out_dir: str | os.PathLike, *, max_shard_size: str = "16MB",
                   dtype: torch.dtype | None = None, extra: Any = None) -> Path:
    """Write `model` as a vanilla Hugging Face GPT-2 folder, atomically: `model_type: gpt2`, `GPT2LMHeadModel`
    safetensors (shards of at most `max_shard_size`), the tokenizer's files (`tokenizer.json`, `vocab.json`,
    `merges.txt`, `tokenizer_config.json`). Plain transformers, lm-evaluation-harness and every other GPT-2
    tool open it without importing this project; `load_model` reads it back with identical logits.
    `extra(tmp_folder)` may add files (a card, a summary) before the folder appears."""
    hf = model.to_hf()
    if dtype is not None:
        hf = hf.to(dtype=dtype)

    def fill(tmp: Path) -> None:
        with _quiet_loading():  # no "Writing model shards" bar
            hf.save_pretrained(tmp, max_shard_size=max_shard_size)
        save_tokenizer(tokenizer, tmp)
        if extra is not None:
            extra(tmp)

    return atomic_write_dir(out_dir, fill)


def atomic_save_pretrained(model: Any, out_dir: str | os.PathLike, **kwargs: Any) -> Path:
    """`model.save_pretrained(out_dir)` that never leaves a half-written folder: save beside, then rename."""
    return atomic_write_dir(out_dir, lambda tmp: model.save_pretrained(tmp, **kwargs))
