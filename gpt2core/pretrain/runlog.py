"""What a pretraining run writes about itself: `metrics.jsonl` (one JSON record per log line), `summary.json` and
the loss plot `loss.png`. Only the main process writes."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

from gpt2core.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from gpt2core.paths import expand_path

# Dense bf16 peak of an H100/H200 SXM (989.4 TFLOP/s, NVIDIA's datasheet, without sparsity). Matrix products
# measured on this project's H200 reach about 790, so an MFU near 0.8 would be the practical ceiling.
PEAK_FLOPS_BF16 = 989e12


class RunLog:
    """`metrics.jsonl` of a run, appended record by record; `history` holds the records in memory.

    A run resumed at `resume_step` keeps the records up to that step and drops later ones (from a run that went
    on past its last checkpoint and was lost), so the file reads as one uninterrupted run.
    """

    def __init__(self, out_dir: Path, enabled: bool, resume_step: int = 0):
        self.path = out_dir / "metrics.jsonl"
        self.enabled = enabled
        self.history: list[dict[str, Any]] = []
        if enabled:
            out_dir.mkdir(parents=True, exist_ok=True)
            if resume_step > 0 and self.path.exists():
                records = map(json.loads, self.path.read_text().splitlines())
                self.history = [r for r in records if r.get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.history))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            self.history.append(record)
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def last_val(self) -> dict[str, Any] | None:
        """The latest validation record, if any."""
        return next((r for r in reversed(self.history) if "val_loss" in r), None)


def mfu(flops_per_token: float, tokens_per_s: float, world: int) -> float:
    """Model FLOPs utilisation against the bf16 peak of the GPUs in use."""
    return flops_per_token * tokens_per_s / (PEAK_FLOPS_BF16 * world)


def write_summary(out_dir: Path, summary: dict[str, Any]) -> Path:
    """`summary.json`, strict JSON: a non-finite number (a diverged validation loss) is written as null."""
    return atomic_write_json(out_dir / "summary.json", _finite(summary), indent=1)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def plot_losses(history: list[dict[str, Any]], path: Path, extra: str | None = None) -> Path:
    """Train and validation loss against tokens seen, as a PNG (also copied to `extra` when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["tokens"], r["loss"]) for r in history if "loss" in r and "event" not in r]
    val = [(r["tokens"], r["val_loss"]) for r in history if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", ms=3)
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    if extra:
        atomic_write_bytes(expand_path(extra), buf.getvalue())
    return path
