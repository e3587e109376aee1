"""The record store: run records in `<out>/runs`, found by cell key through `index.json`. A key missing from the
index (or an unreadable index) makes a scan of the folder for records stamped with a key. A cached record that
cannot be read (or whose predictions cannot) is reported, and its cell re-runs; nothing is deleted. Records of
an older format (`RECORD_FORMAT`) are never reused: a scan counts and reports them, a lookup reports one."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.leaderboard.planning import Cell
from tasks.leaderboard.tasks_api import (RECORD_FORMAT, RecordError, RunRecord, TaskError, atomic_write_text,
                                         check_rows, predictions_beside, read_predictions, read_record,
                                         scores_text)

INDEX_NAME = "index.json"


@dataclass
class Cached:
    record: RunRecord
    path: Path
    rows: list[dict[str, Any]] | None  # per-example predictions (None for a text-scoring row)


class RecordStore:
    """Run records in `runs_dir`, found by cell key through `index.json` (rebuilt by a scan when it is missing,
    unreadable, or lacks a key)."""

    def __init__(self, runs_dir: Path, log: Callable[[str], None]):
        self.runs_dir = runs_dir
        self.log = log
        self.index_path = runs_dir / INDEX_NAME
        self.index: dict[str, dict[str, Any]] = {}
        self._scanned = False
        self.dirty = False  # entries found by a scan, not yet in index.json
        if self.index_path.exists():
            try:
                data = json.loads(self.index_path.read_text(encoding="utf-8"))
                if not isinstance(data, dict) or not isinstance(data.get("cells"), dict):
                    raise ValueError("no 'cells' mapping")
                self.index = data["cells"]
            except (OSError, ValueError) as e:
                self.log(f"warning: the cache index {self.index_path} cannot be read ({e}); rebuilding it from the "
                         "records in that folder")
                self.scan()

    def scan(self) -> None:
        """Add every record of the current format in the folder that carries a leaderboard cell key to the index;
        never raises (a file it cannot read is left to the lookup of its cell, which reports it)."""
        if self._scanned:
            return
        self._scanned = True
        older: dict[Any, int] = {}
        for p in sorted(self.runs_dir.glob("*.json")):
            if p.name == INDEX_NAME:
                continue
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
                stamp = data["leaderboard"]
                key = stamp["cell_key"]
                cell = dict(stamp.get("cell") or {})
                fmt = data.get("format")
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # not a leaderboard record (or unreadable: reported when its cell looks it up)
            if not isinstance(key, str):
                continue
            if fmt != RECORD_FORMAT:
                older[fmt] = older.get(fmt, 0) + 1
                continue
            if key not in self.index:
                self.index[key] = {"record": p.name, **cell}
                self.dirty = True
        if older:
            found = ", ".join(f"{n} of format {f}" for f, n in sorted(older.items(), key=lambda x: str(x[0])))
            self.log(f"note: {self.runs_dir} holds leaderboard records of an older format ({found}; this version "
                     f"writes format {RECORD_FORMAT}); they are not reused: their cells run again")

    def _path(self, entry: dict[str, Any]) -> Path:
        p = Path(entry["record"])
        return p if p.is_absolute() else self.runs_dir / p

    def lookup(self, key: str) -> tuple[Cached | None, str | None]:
        """(the cached result, None) or (None, why it cannot be used; None when there simply is none)."""
        if key not in self.index:
            self.scan()
        entry = self.index.get(key)
        if entry is None:
            return None, None
        try:
            path = self._path(entry)
            record = read_record(path)
            stamp = record.leaderboard if isinstance(record.leaderboard, dict) else {}
            if stamp.get("cell_key") != key:
                return None, f"{path} now holds another run (cell key {stamp.get('cell_key')!r})"
            rows = None
            if record.predictions:
                rows = read_predictions(predictions_beside(record.predictions, path))
                check_rows(record, rows)
            elif not scores_text(record.task):
                return None, f"{path} names no predictions file"
        except (RecordError, TaskError) as e:
            return None, str(e)
        except (KeyError, TypeError, ValueError) as e:  # an index entry or record field of the wrong shape
            return None, f"the cached record of key {key} is malformed ({type(e).__name__}: {e})"
        return Cached(record, path, rows), None

    def add(self, key: str, path: Path, cell: Cell) -> None:
        rel = path.name if path.parent.resolve() == self.runs_dir.resolve() else str(path.resolve())
        self.index[key] = {"record": rel, **cell.describe()}
        self.save()

    def save(self) -> None:
        text = json.dumps({"format": 1, "cells": self.index}, indent=1, sort_keys=True) + "\n"
        atomic_write_text(self.index_path, text)
        self.dirty = False
