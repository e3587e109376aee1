"""Device names from the command line and configs, checked before anything is loaded onto them.

`torch.device("cuda")` is accepted by a CPU-only torch, and the failure comes later, as an AssertionError from deep in
`.to()`; here it is a one-line `ConfigError` that says which devices this torch has.
"""

from __future__ import annotations

import torch

from gpt2core.errors import ConfigError

__all__ = ["check_device"]


def _available() -> str:
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return ", ".join(names)


def check_device(device: str | torch.device | None, what: str = "--device") -> torch.device | None:
    """`device` as a `torch.device` this process can use (None stays None); else a `ConfigError` naming it and the
    devices there are."""
    if device is None or isinstance(device, torch.device) and device.type == "cpu":
        return device
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{what} {device!r} is not a device name; use one of {_available()}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is built without CUDA" if torch.version.cuda is None
                   else "torch sees no CUDA device (check the driver and CUDA_VISIBLE_DEVICES)")
            raise ConfigError(f"{what} {device!r}: {why} ({torch.__version__}); use {what} cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{what} {device!r}: there are only {torch.cuda.device_count()} CUDA devices; use one "
                              f"of {_available()}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{what} {device!r}: MPS is not available here; use one of {_available()}")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{what} {device!r}: gpt2suite runs on cpu, cuda or mps; use one of {_available()}")
    return dev
