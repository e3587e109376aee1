"""Loading and saving model folders with errors that say what is wrong, and atomic writes."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from gpt2core.config import GPT2Config
from gpt2core.model import GPT2LMModel


class CheckpointError(ValueError):
    """A model folder that cannot be loaded as it is."""


def _check_safetensors(folder: Path) -> None:
    """Open every weight file once so a truncated or corrupt one is named, not a deep library error."""
    for f in sorted(folder.glob("*.safetensors")):
        try:
            load_file(f, device="cpu")
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            raise CheckpointError(
                f"weights file {f} is truncated or corrupt ({e}); restore it or point --model at another checkpoint"
            ) from e


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> GPT2LMModel:
    """A `GPT2LMModel` from one of our `save_pretrained` folders or a Hugging Face GPT-2 folder / hub name."""
    folder = Path(path)
    if folder.is_dir():
        config_file = folder / "config.json"
        if not config_file.exists():
            raise CheckpointError(f"{folder} has no config.json: it is not a saved model folder")
        try:
            model_type = json.loads(config_file.read_text()).get("model_type")
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{config_file} is not valid JSON ({e})") from e
        _check_safetensors(folder)
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
        model = GPT2LMModel.from_hf(str(path))  # a hub name such as "gpt2" (needs network access)
    else:
        raise CheckpointError(f"model folder {folder} does not exist")
    if dtype is None and model.dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32  # half-precision storage keeps folders small; compute stays fp32 unless asked
    return model.to(device=device, dtype=dtype).eval()


def atomic_save_pretrained(model: Any, out_dir: str | os.PathLike, **kwargs: Any) -> Path:
    """`model.save_pretrained(out_dir)` that never leaves a half-written folder: save beside, then rename."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, **kwargs)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
