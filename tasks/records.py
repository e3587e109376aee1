"""Run records: one JSON file per fine-tuning / prompting / evaluation run, plus its per-example predictions.

A record says what ran (task + version, method, shots, model path + config hash, split, seed, the full resolved
config, git commit), what it cost (trainable/total parameters, train/eval seconds, peak memory, tokens seen) and
what it scored (metric name -> value), and points at a JSONL file with one object per example (`id`,
`prediction`, `references`, per-example scores) so anyone can recompute the metrics.

    rec = make_record(task="sst2", method="lora", model_path="results/backbones/default", split="validation",
                      n_examples=872, metrics={"accuracy": 0.9}, predictions=pred_path, seed=0, config=cfg)
    path = write_record(rec)            # results/runs/sst2__lora__default__seed0__<hash>.json, atomically
    rec = read_record(path)

Writes are atomic (a temporary file in the same folder, then `os.replace`), so a crashed run never leaves a
half-written record that a leaderboard would read.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS_DIR = REPO_ROOT / "results" / "runs"
RECORD_FORMAT = 1

# Every record has these keys (None where a value does not apply, e.g. train_seconds of a pure evaluation).
RECORD_KEYS = (
    "format", "task", "task_version", "method", "shots", "model", "split", "n_examples", "metrics", "predictions",
    "seed", "trainable_params", "total_params", "train_seconds", "eval_seconds", "peak_memory_mb", "tokens_seen",
    "git_commit", "config", "created_at",
)

# Keys of a model's config.json that do not change the model (library version, where it was loaded from).
_VOLATILE_MODEL_KEYS = ("transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype")


class RecordError(ValueError):
    """A run record that cannot be read or written as it is."""


def _jsonable(obj: Any) -> Any:
    """Plain JSON types for dataclasses, paths, tuples, sets, numpy/torch scalars; NaN/inf become None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(_jsonable(v) for v in obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None  # strict JSON has no NaN
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _jsonable(obj.item())
    return str(obj)


def config_hash(obj: Any) -> str:
    """16 hex digits of sha256 over `obj` as canonical JSON (sorted keys): equal configs hash alike."""
    blob = json.dumps(_jsonable(obj), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def model_config_hash(model_path: str | os.PathLike) -> str | None:
    """`config_hash` of a model folder's config.json without volatile keys; None when there is no such file."""
    cfg = Path(model_path) / "config.json"
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return config_hash({k: v for k, v in data.items() if k not in _VOLATILE_MODEL_KEYS})


def git_commit(repo: str | os.PathLike = REPO_ROOT) -> str | None:
    """The checked-out commit of `repo` (with `-dirty` when tracked files changed), or None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def peak_memory_mb() -> float:
    """Peak memory of this run: CUDA max allocated when CUDA was used, else the process' max RSS."""
    torch = sys.modules.get("torch")  # never import torch just to ask
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)


def repo_relative(path: str | os.PathLike) -> str:
    """`path` relative to the repository root when it lies inside it, else absolute (records stay portable)."""
    p = Path(path).resolve()
    try:
        return p.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return p.as_posix()


def make_record(
    *,
    task: Any,
    method: str,
    model_path: str | os.PathLike,
    split: str,
    n_examples: int,
    metrics: Mapping[str, float],
    predictions: str | os.PathLike | None,
    seed: int | None,
    config: Any,
    shots: int | None = None,
    trainable_params: int | None = None,
    total_params: int | None = None,
    train_seconds: float | None = None,
    eval_seconds: float | None = None,
    peak_memory_mb: float | None = None,
    tokens_seen: int | None = None,
    model_hash: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A run record (a plain dict with every key of `RECORD_KEYS`).

    `task` is a `TaskSpec` or a task name (its version is looked up in the registry). `config` is the full
    resolved config (dataclass or dict). `model_hash` defaults to the hash of `model_path`/config.json.
    `extra` adds keys (they must not clash with the standard ones).
    """
    if isinstance(task, str):
        from tasks.registry import get_task

        task = get_task(task)
    if not metrics:
        raise RecordError("make_record: no metrics given; a run record must carry at least one score")
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "task": task.name,
        "task_version": task.version,
        "method": method,
        "shots": shots,
        "model": {
            "path": os.fspath(model_path),
            "config_hash": model_hash or model_config_hash(model_path),
        },
        "split": split,
        "n_examples": int(n_examples),
        "metrics": {str(k): _jsonable(float(v)) for k, v in metrics.items()},
        "predictions": repo_relative(predictions) if predictions is not None else None,
        "seed": seed,
        "trainable_params": trainable_params,
        "total_params": total_params,
        "train_seconds": None if train_seconds is None else round(float(train_seconds), 3),
        "eval_seconds": None if eval_seconds is None else round(float(eval_seconds), 3),
        "peak_memory_mb": peak_memory_mb,
        "tokens_seen": tokens_seen,
        "git_commit": git_commit(),
        "config": _jsonable(config),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    for key, value in (extra or {}).items():
        if key in record:
            raise RecordError(f"make_record: extra key {key!r} clashes with a standard record key")
        record[key] = _jsonable(value)
    return record


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def record_name(record: Mapping[str, Any]) -> str:
    """`<task>__<method>[-<shots>shot]__<model folder>__seed<seed>__<hash>.json`.

    The hash covers what defines the run (config, split, shots, model, n_examples), not when it ran, so
    rerunning the same setup replaces its record instead of piling up copies.
    """
    model = record.get("model") or {}
    model_name = Path(str(model.get("path", "model"))).name or "model"
    method = str(record.get("method"))
    if record.get("shots") is not None:
        method += f"-{record['shots']}shot"
    key = {k: record.get(k) for k in ("task", "task_version", "method", "shots", "model", "split", "n_examples",
                                       "seed", "config")}
    parts = [record.get("task"), method, model_name, f"seed{record.get('seed')}", config_hash(key)[:8]]
    return "__".join(_slug(str(p)) for p in parts) + ".json"


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_record(record: Mapping[str, Any], path: str | os.PathLike | None = None,
                 runs_dir: str | os.PathLike | None = None) -> Path:
    """Write `record` atomically to `path` (default: `runs_dir`/`record_name(record)`, runs_dir defaulting to
    results/runs). A folder as `path` means that folder with the default name. Returns the file written."""
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise RecordError(f"write_record: record lacks {', '.join(missing)}; build it with make_record")
    if path is None:
        out = Path(runs_dir or DEFAULT_RUNS_DIR) / record_name(record)
    else:
        out = Path(path)
        if out.is_dir():
            out = out / record_name(record)
    try:
        text = json.dumps(_jsonable(record), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:  # pragma: no cover - _jsonable makes every value serialisable
        raise RecordError(f"write_record: record is not JSON-serialisable ({e})") from e
    atomic_write_text(out, text)
    return out


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """A record written by `write_record`; a missing, unreadable or incomplete file is a `RecordError`."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"run record {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecordError(f"run record {p} cannot be read ({e})") from None
    except json.JSONDecodeError as e:
        raise RecordError(f"run record {p} is not valid JSON ({e}); delete it and rerun the run that wrote it") from None
    if not isinstance(data, dict):
        raise RecordError(f"run record {p} holds a {type(data).__name__}, not a JSON object")
    missing = [k for k in RECORD_KEYS if k not in data]
    if missing:
        raise RecordError(f"run record {p} lacks {', '.join(missing)} (not a gpt2suite run record?)")
    return data


def write_predictions(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Per-example predictions as JSONL (one object per line), written atomically. Returns the path."""
    out = Path(path)
    lines = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise RecordError(f"write_predictions: row {i} is a {type(row).__name__}, expected a mapping")
        lines.append(json.dumps(_jsonable(row), ensure_ascii=False, allow_nan=False))
    atomic_write_text(out, "".join(line + "\n" for line in lines))
    return out


def read_predictions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a predictions JSONL file (relative paths are taken from the repository root first)."""
    p = Path(path)
    if not p.is_absolute() and not p.exists() and (REPO_ROOT / p).exists():
        p = REPO_ROOT / p
    rows = []
    try:
        with open(p, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise RecordError(f"{p}:{lineno}: not valid JSON ({e})") from None
    except FileNotFoundError:
        raise RecordError(f"predictions file {p} does not exist") from None
    return rows


def write_run(record: dict[str, Any], rows: Iterable[Mapping[str, Any]],
              runs_dir: str | os.PathLike | None = None) -> Path:
    """Write a run's per-example predictions and then its record, side by side in `runs_dir` (default
    results/runs): `<name>.predictions.jsonl` and `<name>.json`. Sets `record["predictions"]` (repo-relative)
    and returns the record's path. The record is written last, so a record always has its predictions."""
    folder = Path(runs_dir or DEFAULT_RUNS_DIR)
    name = record_name(record)
    pred_path = write_predictions(rows, folder / (name[: -len(".json")] + ".predictions.jsonl"))
    record["predictions"] = repo_relative(pred_path)
    return write_record(record, folder / name)
