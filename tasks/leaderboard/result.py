"""What a leaderboard run hands the renderer: each cell's status (with its record and per-example rows), the
notes on skipped cells, and (after rendering) the rows and files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.leaderboard.config import LeaderboardConfig
from tasks.leaderboard.planning import Cell, Note
from tasks.leaderboard.tasks_api import RunRecord


@dataclass
class CellStatus:
    cell: Cell
    key: str
    status: str  # cached | ran | failed | planned (dry run) | missing (render only)
    record: RunRecord | None = None
    path: Path | None = None
    rows: list[dict[str, Any]] | None = None
    message: str | None = None
    seconds: float | None = None


@dataclass
class LeaderboardResult:
    config: LeaderboardConfig
    cells: list[CellStatus]
    notes: list[Note]
    files: dict[str, Path] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    wall_seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.cells)

    @property
    def failed(self) -> list[CellStatus]:
        return [c for c in self.cells if c.status == "failed"]
