"""Stable hash rules for choosing rows: the same answer in every process, on every machine (unlike `hash()`).

`share_position(key, resolution, seed)` places a row (by a key such as its id) at one of `resolution` equal
positions in [0, 1); a carved split or a corpus filter keeps the rows whose position falls in a range. Used by
the task specs (carved splits) and the pretraining corpus filters, so that a corpus can keep exactly the train
part of a dataset whose split is carved by hash.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from collections.abc import Sequence


def share_position(key: str, resolution: int, seed: int = 0) -> int:
    """An integer in [0, resolution): the first 8 hex digits of sha256(key) (sha256(f"{seed}:{key}") when seed is
    not 0), modulo `resolution`."""
    text = str(key) if seed == 0 else f"{seed}:{key}"
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % resolution


def resolution_for(shares: Sequence[float]) -> int:
    """10 ** (the most decimal places among `shares`): the coarsest grid on which every share is whole
    (0.8/0.1/0.1 -> 10, 0.15 -> 100)."""
    places = max((max(0, -Decimal(str(s)).normalize().as_tuple().exponent) for s in shares), default=1)
    return 10 ** max(1, places)


def share_ranges(shares: Sequence[float]) -> tuple[int, list[tuple[int, int]]]:
    """(resolution, [start, end) position ranges): consecutive ranges of the given shares, in order, from 0."""
    res = resolution_for(shares)
    ranges, start = [], 0
    for s in shares:
        end = start + round(Decimal(str(s)) * res)
        ranges.append((start, end))
        start = end
    return res, ranges
