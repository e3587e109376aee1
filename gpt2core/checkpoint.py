"""Loading and saving model folders with errors that say what is wrong, and atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from gpt2core.config import GPT2Config
from gpt2core.errors import CheckpointCorrupt, CheckpointError
from gpt2core.io import atomic_write_dir
from gpt2core.model import GPT2LMModel

__all__ = ["CheckpointCorrupt", "CheckpointError", "atomic_save_pretrained", "load_model", "read_weights"]


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


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> GPT2LMModel:
    """A `GPT2LMModel` from one of our `save_pretrained` folders or a Hugging Face GPT-2 folder / hub name."""
    folder = Path(path)
    hint = "pass a folder written by save_pretrained (ours or a transformers GPT-2), or a hub name such as 'gpt2'"
    if folder.is_dir():
        config_file = folder / "config.json"
        if not config_file.exists():
            raise CheckpointError(f"{folder} has no config.json: it is not a saved model folder; {hint}")
        try:
            model_type = json.loads(config_file.read_text()).get("model_type")
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{config_file} is not valid JSON ({e}); restore it or save the model again") from e
        read_weights(folder, "restore it or point --model at another checkpoint")
        if model_type == "gpt2":
            model = GPT2LMModel.from_hf(folder)
        elif model_type == GPT2Config.model_type:
            try:
                model = GPT2LMModel.from_pretrained(folder)
            except RuntimeError as e:  # transformers reports shape mismatches as RuntimeError
                raise CheckpointError(f"weights in {folder} do not match its config.json: {e}") from e
        else:
            raise CheckpointError(f"{config_file} has model_type={model_type!r}; expected 'gpt2core' or 'gpt2'")
    elif str(path).count("/") <= 1 and not str(path).startswith((".", "/")):
        try:
            model = GPT2LMModel.from_hf(str(path))  # a hub name such as "gpt2" (needs network access)
        except OSError as e:  # transformers' "not found" / offline errors are OSErrors
            why = " ".join(str(e).split())  # transformers' message spans lines; the command line prints one
            raise CheckpointError(f"{path!r} is no model folder here and cannot be loaded from the Hugging Face "
                                  f"hub ({why}); {hint}") from e
    else:
        raise CheckpointError(f"model folder {folder} does not exist; {hint}")
    if dtype is None and model.dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32  # half-precision storage keeps folders small; compute stays fp32 unless asked
    return model.to(device=device, dtype=dtype).eval()


def atomic_save_pretrained(model: Any, out_dir: str | os.PathLike, **kwargs: Any) -> Path:
    """`model.save_pretrained(out_dir)` that never leaves a half-written folder: save beside, then rename."""
    return atomic_write_dir(out_dir, lambda tmp: model.save_pretrained(tmp, **kwargs))
