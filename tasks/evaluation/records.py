"""Run records: one `RunRecord` per run of any method (fine-tuning, evaluation, few-shot, baseline, perplexity),
written by one writer beside a JSONL file of its per-example rows.

    record = new_record(spec, "lora", model_path, split="validation", metrics={...}, n_examples=872, seed=0,
                        config=cfg)
    path = write_run(record, rows, runs_dir)      # <runs_dir>/<name>.predictions.jsonl, then <name>.json
    record = read_record(path); rows = read_predictions(record.predictions)

A record says what ran (task, its version and spec hash, method, shots, model path + config hash, split, seed,
the resolved config, git commit), what it cost (parameters, seconds, peak memory, tokens seen) and what it
scored; `details` holds what a method adds (the training log, few-shot demo counts, perplexity counts).
Every per-example row has one layout: `{"id", "prediction", "references", "scores": {metric: value}}` plus an
optional `"details"` mapping (few-shot: demos used, label scores). Writes are atomic and the record is
written after its predictions, so a record always has them.
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt2core.io import atomic_write_json, atomic_write_text
from gpt2core.paths import REPO_ROOT
from tasks.data.registry import spec_fields
from tasks.errors import RecordError

# Ad-hoc runs write here (ignored by git); published records live in results/runs, written only when asked for.
DEFAULT_RUNS_DIR = REPO_ROOT / "runs" / "records"
RECORD_FORMAT = 2  # 2: one RunRecord layout for every method, nested per-example scores
# Keys of a model's config.json that do not change the model (library version, where it was loaded from).
_VOLATILE_MODEL_KEYS = ("transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype")


def jsonable(obj: Any) -> Any:
    """Plain JSON types for dataclasses, paths, tuples, sets, numpy/torch scalars; NaN/inf become None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(jsonable(v) for v in obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None  # strict JSON has no NaN
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return jsonable(obj.item())
    return str(obj)


def config_hash(obj: Any) -> str:
    """16 hex digits of sha256 over `obj` as canonical JSON (sorted keys): equal configs hash alike."""
    blob = json.dumps(jsonable(obj), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def model_config_hash(model_path: str | os.PathLike) -> str | None:
    """`config_hash` of a model folder's config.json without volatile keys; None when there is no such file."""
    try:
        data = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return config_hash({k: v for k, v in data.items() if k not in _VOLATILE_MODEL_KEYS})


def git_commit(repo: str | os.PathLike = REPO_ROOT) -> str | None:
    """The checked-out commit of `repo`, with `-dirty` when tracked files other than the published results
    changed (a run writing its own records into results/ does not make the code dirty); None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def peak_memory_mb() -> float:
    """Peak memory of this process: CUDA max allocated when CUDA was used, else the max RSS."""
    torch = sys.modules.get("torch")  # never import torch just to ask
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)  # Linux reports KiB, macOS bytes


def repo_relative(path: str | os.PathLike) -> str:
    """`path` relative to the repository root when it lies inside it, else absolute (records stay portable)."""
    p = Path(path).resolve()
    try:
        return p.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return p.as_posix()


@dataclass
class RunRecord:
    task: str
    task_version: str
    task_hash: str  # config_hash of the whole task spec
    method: str  # full | linear | lora | prompt | prefix | zero-shot | few-shot[-calibrated] | baseline-<name> | perplexity
    model: dict[str, Any]  # {"path": ..., "config_hash": ...}
    split: str
    n_examples: int
    metrics: dict[str, float | None]
    seed: int | None = None
    shots: int | None = None
    config: dict[str, Any] = field(default_factory=dict)  # everything that defines the run, resolved
    trainable_params: int | None = None
    total_params: int | None = None
    train_seconds: float | None = None
    eval_seconds: float | None = None
    peak_memory_mb: float | None = None
    tokens_seen: int | None = None
    details: dict[str, Any] = field(default_factory=dict)  # what the method adds (training log, demo counts, ...)
    predictions: str | None = None  # the per-example JSONL, repo-relative
    leaderboard: dict[str, Any] | None = None  # the cell that produced it (set by the leaderboard)
    git_commit: str | None = None
    created_at: str = ""
    format: int = RECORD_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "<dict>") -> "RunRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        if data.get("format") != RECORD_FORMAT:
            raise RecordError(f"run record {where} has format {data.get('format')!r}, not {RECORD_FORMAT}: it was "
                              "written by an older gpt2suite; re-run it")
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING and f.name not in data]  # type: ignore[misc]
        if missing:
            raise RecordError(f"run record {where} lacks {', '.join(missing)} (not a gpt2suite run record?)")
        return cls(**{k: v for k, v in data.items() if k in names})


def new_record(spec: Any, method: str, model_path: str | os.PathLike, *, split: str, metrics: Mapping[str, float],
               n_examples: int, seed: int | None = None, config: Any = None, model_hash: str | None = None,
               **fields: Any) -> RunRecord:
    """A record for a run of `method` on the task `spec`; `fields` sets the cost fields, `shots`, `details`."""
    if not metrics:
        raise RecordError("a run record must carry at least one score")
    seconds = {k: (None if fields.get(k) is None else round(float(fields[k]), 3))
               for k in ("train_seconds", "eval_seconds") if k in fields}
    return RunRecord(
        task=spec.name, task_version=spec.version, task_hash=config_hash(spec_fields(spec)), method=method,
        # a model inside the repository is recorded by its repository path, so records read the same anywhere
        model={"path": repo_relative(model_path) if os.path.exists(model_path) else os.fspath(model_path),
               "config_hash": model_hash or model_config_hash(model_path)},
        split=split, n_examples=int(n_examples), metrics={str(k): jsonable(float(v)) for k, v in metrics.items()},
        seed=seed, config=jsonable(config or {}), git_commit=git_commit(),
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **{**fields, **seconds, "details": jsonable(fields.get("details") or {})})


def example_row(id: Any, prediction: str, references: list[str], scores: Mapping[str, float],
                details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One per-example row in the one layout every predictions file uses."""
    row: dict[str, Any] = {"id": str(id), "prediction": prediction, "references": list(references),
                           "scores": dict(scores)}
    if details:
        row["details"] = dict(details)
    return row


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def record_name(record: RunRecord) -> str:
    """`<task>__<method>[-<shots>shot]__<model folder>[__seed<seed>]__<hash>.json`; the hash covers what defines the
    run (not when it ran), so re-running the same setup replaces its record."""
    model_name = Path(str(record.model.get("path", "model"))).name or "model"
    method = record.method + (f"-{record.shots}shot" if record.shots is not None else "")
    key = {k: getattr(record, k) for k in ("task", "task_hash", "method", "shots", "model", "split", "n_examples",
                                           "seed", "config")}
    seed = [] if record.seed is None else [f"seed{record.seed}"]
    parts = [record.task, method, model_name, *seed, config_hash(key)[:8]]
    return "__".join(_slug(str(p)) for p in parts) + ".json"


def write_record(record: RunRecord, path: str | os.PathLike) -> Path:
    try:
        return atomic_write_json(path, record.to_dict())
    except (TypeError, ValueError) as e:  # pragma: no cover - jsonable makes every value serialisable
        raise RecordError(f"run record is not JSON-serialisable ({e})") from e


def write_predictions(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    lines = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or not {"id", "prediction", "references", "scores"} <= set(row):
            raise RecordError(f"predictions row {i} is not an example_row (id, prediction, references, scores)")
        lines.append(json.dumps(jsonable(row), ensure_ascii=False, allow_nan=False))
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def write_run(record: RunRecord, rows: Iterable[Mapping[str, Any]] | None,
              runs_dir: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """The one writer: per-example rows (if any) as `<name>.predictions.jsonl`, then the record as `<name>.json`,
    in `runs_dir` (default runs/records). Sets `record.predictions`; returns the record's path."""
    folder = Path(runs_dir or DEFAULT_RUNS_DIR)
    stem = (name or record_name(record)).removesuffix(".json")
    if rows is not None:
        record.predictions = repo_relative(write_predictions(rows, folder / f"{stem}.predictions.jsonl"))
    return write_record(record, folder / f"{stem}.json")


def read_record(path: str | os.PathLike) -> RunRecord:
    """A record written by `write_run`; a missing, unreadable or incomplete file is a `RecordError`."""
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
    return RunRecord.from_dict(data, str(p))


def predictions_beside(predictions: str, record_path: str | os.PathLike) -> Path:
    """A record's predictions file: the path it names (repository-relative or absolute, as it was written) or,
    when that is not there (the records were copied into another folder or clone, as published results are), the
    file of that name beside the record, where the one run writer put it."""
    p = Path(predictions)
    named = p if p.is_absolute() else REPO_ROOT / p
    beside = Path(record_path).parent / p.name
    return beside if not (named.exists() or p.exists()) and beside.exists() else p


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
