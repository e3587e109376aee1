"""Where things are: the repository root and the one data-folder variable.

`GPT2SUITE_DATA_DIR` names the local data mirror (default: `../shared/data` beside the repository). Config
paths may use `${DATA_DIR}` (that folder) and `${REPO}` (the repository root).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR_VAR = "GPT2SUITE_DATA_DIR"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The local mirror to read: `explicit`, else $GPT2SUITE_DATA_DIR, else ../shared/data when it exists;
    None when there is none (then datasets come from the Hugging Face Hub)."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get(DATA_DIR_VAR):
        return Path(os.environ[DATA_DIR_VAR])
    return DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else None


def expand_path(path: str | os.PathLike) -> Path:
    """`${DATA_DIR}`, `${REPO}`, `~` and other environment variables expanded."""
    root = data_dir() or DEFAULT_DATA_DIR
    text = str(path).replace("${DATA_DIR}", str(root)).replace("${REPO}", str(REPO_ROOT))
    return Path(os.path.expanduser(os.path.expandvars(text)))


def repo_path(path: str | os.PathLike) -> Path:
    """`path` expanded; a relative path is taken from the repository root."""
    p = expand_path(path)
    return p if p.is_absolute() else REPO_ROOT / p
