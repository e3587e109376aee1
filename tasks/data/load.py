"""Task rows: a spec's split read from the local mirror (or the hub), in its kind's row layout, carved if asked.

    rows = load_split("trec", "validation")     # a datasets.Dataset: id, text, label
    text = load_text("wikitext2", "test")        # language modelling: the split as one document

Data comes from the local mirror (`GPT2SUITE_DATA_DIR`, default ../shared/data) when it exists, else from the
Hugging Face Hub dataset the spec names (for users with network access).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

from gpt2core.hashing import share_position, share_ranges
from gpt2core.paths import DATA_DIR_VAR, data_dir
from gpt2core.typed_config import unknown_name
from tasks.data.registry import get_task, hook
from tasks.data.spec import TaskSpec
from tasks.errors import DataError, TaskError
from tasks.kinds import get_kind


def _split(spec: TaskSpec, split: str) -> Any:
    if split not in spec.splits:
        raise TaskError(str(unknown_name("split", split, spec.splits, f"task {spec.name!r}")))
    return spec.splits[split]


def _local_file(spec: TaskSpec, root: Path, upstream: str) -> Path:
    ext = ".txt.gz" if spec.data.format == "text" else ".jsonl.gz"
    path = root / (spec.data.local or "") / f"{upstream}{ext}"
    if not spec.data.local or not path.exists():
        folder = root / (spec.data.local or "")
        available = sorted(p.name.split(".")[0] for p in folder.glob(f"*{ext}")) if spec.data.local else []
        raise DataError(
            f"dataset of task {spec.name!r}: split {upstream!r} not found in the local mirror {root} (looked for "
            f"{path}; splits there: {available or 'none'}); set {DATA_DIR_VAR} to a mirror that has it"
            + (f", or unset it and run with network access to use the hub dataset {spec.data.hub!r}"
               if spec.data.hub else ""))
    return path


def _raw_records(spec: TaskSpec, upstream: str, root: Path | None) -> list[dict[str, Any]]:
    from datasets import load_dataset

    if root is not None and spec.data.local:
        return list(load_dataset("json", data_files=str(_local_file(spec, root, upstream)), split="train"))
    if not spec.data.hub:
        raise DataError(f"task {spec.name!r} has no local mirror here ({DATA_DIR_VAR} unset and ../shared/data "
                        f"missing) and names no hub dataset; set {DATA_DIR_VAR}")
    try:
        return list(load_dataset(spec.data.hub, spec.data.hub_config, split=upstream))
    except Exception as e:  # the hub client raises many types; all mean "not available here"
        raise DataError(
            f"task {spec.name!r} split {upstream!r}: no local mirror and the hub dataset {spec.data.hub!r} could "
            f"not be loaded ({type(e).__name__}: {e}); set {DATA_DIR_VAR} or run with network access") from None


def carve(spec: TaskSpec, split: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of `split` among the rows of its upstream split, by the hash position of each row's id."""
    src = _split(spec, split)
    parts = [(name, s) for name, s in spec.splits.items() if s.source == src.source and s.share is not None]
    if not parts:
        return rows
    resolution, ranges = share_ranges([s.share for _, s in parts])  # type: ignore[misc]
    by_name = dict(zip((name for name, _ in parts), ranges))
    pos = [share_position(r["id"], resolution, parts[0][1].seed) for r in rows]
    if src.share is not None:
        lo, hi = by_name[split]
        return [r for r, p in zip(rows, pos) if lo <= p < hi]
    taken = list(by_name.values())
    return [r for r, p in zip(rows, pos) if not any(lo <= p < hi for lo, hi in taken)]


def load_rows(task: str | TaskSpec, split: str, data_dir_: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """`split` of `task` as a list of rows in the kind's layout."""
    spec = get_task(task)
    kind = get_kind(spec.kind)
    src = _split(spec, split)
    raw = _raw_records(spec, src.source, data_dir(data_dir_))
    fix = hook(spec)
    rows = []
    for i, record in enumerate(raw):
        row = kind.make_row(spec, record, i)
        rows.append(fix(row) if fix is not None else row)
    rows = carve(spec, split, rows)
    if not rows:
        raise DataError(f"split {split!r} of task {spec.name!r} is empty")
    return rows


def load_split(task: str | TaskSpec, split: str, data_dir_: str | os.PathLike | None = None) -> Any:
    """`split` of `task` as a `datasets.Dataset` in the kind's row layout (see `load_rows`)."""
    from datasets import Dataset

    return Dataset.from_list(load_rows(task, split, data_dir_))


def load_text(task: str | TaskSpec, split: str, data_dir_: str | os.PathLike | None = None) -> str:
    """A `format: text` split read whole (language modelling)."""
    spec = get_task(task)
    src = _split(spec, split)
    root = data_dir(data_dir_)
    if root is None:
        raise DataError(f"task {spec.name!r} needs the local data mirror: set {DATA_DIR_VAR}")
    with gzip.open(_local_file(spec, root, src.source), "rt", encoding="utf-8") as f:
        return f.read()
