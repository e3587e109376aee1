"""Cache keys: a cell's key is a hash of everything that affects its result (task + version + prompt/template
fields, the method, shots, seed, model path + config hash + a hash of its weight files, the budgets that apply,
the resolved fine-tuning config, `CELL_FORMAT`)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

from tasks.leaderboard.config import BASELINE_MODEL, DUMMY_MODEL, LeaderboardConfig, resolve_model_path
from tasks.leaderboard.planning import Cell
from tasks.leaderboard.tasks_api import (config_hash, finetune_config, get_task, model_config_hash, repo_relative,
                                         task_fields)

CELL_FORMAT = 1  # bump when a runner's behaviour changes in a way that changes results: every cell re-runs
EVAL_SUBSET = "first max_eval_examples of the eval split shuffled with seed 0 (tasks.finetune.eval_rows)"

_FINGERPRINTS: dict[tuple[str, int, int], str] = {}
_MODEL_FILES = ("config.json", "model.safetensors.index.json", "vocab.json", "merges.txt", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "adapter_config.json",
                "gpt2suite.json")
_NOT_RESULTS = ("progress", "threads", "logging_steps")  # FinetuneConfig keys that do not change a result


def _defines_model(name: str) -> bool:
    return name in _MODEL_FILES or name.endswith((".safetensors", ".bin", ".pt"))


def folder_fingerprint(path: str | os.PathLike) -> str | None:
    """sha256 (16 hex) over the names and contents of the files of a model/adapter folder that define its outputs
    (weights, config, tokenizer, adapter files; not READMEs, plots or training logs beside them); None when the
    folder does not exist. Each file is hashed once per process per (path, size, mtime)."""
    root = Path(path)
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in root.iterdir() if p.is_file() and _defines_model(p.name)):
        st = f.stat()
        ident = (str(f), st.st_size, st.st_mtime_ns)
        if ident not in _FINGERPRINTS:
            fh = hashlib.sha256()
            with open(f, "rb") as fp:
                for chunk in iter(lambda: fp.read(1 << 20), b""):
                    fh.update(chunk)
            _FINGERPRINTS[ident] = fh.hexdigest()
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + _FINGERPRINTS[ident].encode() + b"\0")
    return h.hexdigest()[:16]


def model_identity(cfg: LeaderboardConfig, model: str) -> dict[str, Any]:
    if model == BASELINE_MODEL:
        return {"path": BASELINE_MODEL}
    path = cfg.models[model].path
    if path == DUMMY_MODEL:
        return {"path": DUMMY_MODEL}
    folder = resolve_model_path(path)
    return {"path": repo_relative(folder), "config_hash": model_config_hash(folder),
            "weights": folder_fingerprint(folder)}


def finetune_overrides(cell: Cell) -> dict[str, Any]:
    """The FinetuneConfig overrides of a fine-tuning cell: its budgets, seed, no progress bar."""
    b = cell.budgets
    out: dict[str, Any] = dict(b.finetune)
    for name in ("max_train_examples", "epochs", "max_steps", "batch_size", "eval_batch_size", "max_length",
                 "val_examples", "threads"):
        if getattr(b, name) is not None:
            out[name] = getattr(b, name)
    if b.eval_limit is not None:
        out["max_eval_examples"] = b.eval_limit
    out["seed"] = cell.seed
    out["progress"] = False
    return out


def adapter_overrides(cell: Cell) -> dict[str, Any]:
    """The evaluation overrides of a trained-adapter cell."""
    b = cell.budgets
    out = {k: v for k, v in b.finetune.items()}
    for name in ("eval_batch_size", "max_length", "threads"):
        if getattr(b, name) is not None:
            out[name] = getattr(b, name)
    return out


def cell_key(cfg: LeaderboardConfig, cell: Cell) -> tuple[str, dict[str, Any]]:
    """(the cache key, what it hashes) of a cell."""
    b = cell.budgets
    what: dict[str, Any] = {"format": CELL_FORMAT, "kind": cell.kind, "task": cell.task, "method": cell.method.name,
                            "shots": cell.method.shots, "seed": cell.seed, "model": model_identity(cfg, cell.model)}
    if cell.kind == "perplexity":
        what.update(split="test", max_len=b.ppl_max_len, stride=b.ppl_stride, max_chars=b.ppl_max_chars)
    else:
        spec = get_task(cell.task)
        what.update(task=task_fields(spec), split=spec.eval_split, eval_limit=b.eval_limit, eval_subset=EVAL_SUBSET)
        if cell.kind == "baseline":
            what.update(baseline=cell.method.baseline)
        elif cell.kind == "fewshot":
            what.update(calibrate=cell.method.calibrate)
        elif cell.kind == "finetune":
            ft = finetune_config(spec, cell.method.finetune, finetune_overrides(cell))
            what["finetune"] = {k: v for k, v in dataclasses.asdict(ft).items() if k not in _NOT_RESULTS}
        elif cell.kind == "adapter":
            folder = resolve_model_path(cell.adapter)
            what["adapter"] = {"path": repo_relative(folder), "weights": folder_fingerprint(folder)}
            what["overrides"] = {k: v for k, v in adapter_overrides(cell).items() if k not in _NOT_RESULTS}
    return config_hash(what), what
