"""Atomic writes: the one helper every writer of the project uses.

A file is written to a temporary file in the same folder, flushed, then moved into place with `os.replace`,
so a crash or a `kill -9` never leaves a half-written file that a reader would take for a complete one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the mode a plain open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return out


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> Path:
    """Strict JSON (no NaN), UTF-8, a trailing newline."""
    return atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False) + "\n")


def atomic_write_dir(out_dir: str | os.PathLike, fill: Callable[[Path], Any]) -> Path:
    """Build a folder with `fill(tmp_folder)` beside `out_dir`, then swap it into place (the old one, if any,
    is removed only after the new one is complete)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        fill(tmp)
        _plain_modes(tmp)
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


def _plain_modes(folder: Path) -> None:
    """The modes a plain mkdir / open() would give: mkdtemp makes 0700 folders, and some writers (safetensors
    via transformers) leave 0600 files, which other users of a shared checkout could not read."""
    umask = _umask()
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)


# What the writers above leave when killed: `.NAME.<random>.tmp` files and folders, `.NAME.old` folders, and the
# folders of atomic_write_dir before it named them `.tmp` (`.NAME.<8 random characters>`).
_TEMPORARY = re.compile(r"^\..+\.(tmp|old)$")
_OLD_TEMPORARY_DIR = re.compile(r"^\..+\.[a-z0-9_]{8}$")


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove what interrupted atomic writes left directly in `folder` (nothing below it, nothing else); returns
    what was removed. Call it only where no other process is writing at the same time."""
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    for p in sorted(root.iterdir()):
        if _TEMPORARY.match(p.name) or (p.is_dir() and _OLD_TEMPORARY_DIR.match(p.name)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed
