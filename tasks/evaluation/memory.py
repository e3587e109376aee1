"""Peak memory of one piece of work inside a longer process (a leaderboard cell), not of the whole process.

The process' own high-water mark (`ru_maxrss`) cannot be reset, so a cell run after a fine-tuning cell would
report the fine-tuning's peak. `CellMemory` samples the resident set size from /proc every few milliseconds in a
thread and reports the most the cell added over the size at its start; on CUDA it resets and reads torch's peak
allocation counter instead. Where /proc is missing (not Linux) it falls back to the process high-water mark.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from tasks.evaluation.records import peak_memory_mb

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
RULE = "most memory the cell added over the process' size at its start (RSS sampled every 5 ms; CUDA: peak allocated)"


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except (OSError, ValueError, IndexError):
        return None


class CellMemory:
    """`with CellMemory() as m: ...` then `m.peak_mb` (MB, one decimal)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._start = self._max = 0.0
        self._cuda = False

    def __enter__(self) -> "CellMemory":
        torch: Any = sys.modules.get("torch")
        self._cuda = bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated() / 2**20
            return self
        start = _rss_mb()
        if start is None:
            return self
        self._start = self._max = start
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = _rss_mb()
            if rss is not None and rss > self._max:
                self._max = rss

    def __exit__(self, *exc: Any) -> None:
        if self._cuda:
            import torch

            self.peak_mb = round(torch.cuda.max_memory_allocated() / 2**20 - self._start, 1)
            return
        if not hasattr(self, "_thread"):
            self.peak_mb = peak_memory_mb()
            return
        self._stop.set()
        self._thread.join()
        rss = _rss_mb()
        self.peak_mb = round(max(self._max, rss or 0.0) - self._start, 1)
