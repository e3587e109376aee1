"""Cache keys: a cell's key is a hash of everything that affects its result and nothing else:

- the whole task spec (`spec_fields`: data source, splits, fields, labels, metrics, prompt, generation limits,
  baseline parameters, version; no hand-kept list, so editing any of it re-keys that task's cells), its eval split;
- the cell kind, method, shots, seed, `CELL_FORMAT`;
- the model: path + config hash + a hash of its weight and tokenizer files (`dummy` / `none` by name);
- the budgets the cell uses: the eval subset (every cell but the text-scoring row), the window of a text-scoring
  row (ppl_max_len, ppl_stride, ppl_max_chars), a baseline's name (its parameters are in the spec), few-shot
  calibration;
- fine-tuning: only `method_fields(cfg, method)` of the resolved config (the common fields that change a result,
  and that method's settings block), so a LoRA setting never re-keys a prefix-tuning cell;
- a trained adapter: its path and the hash of its folder (weights and its own settings), and the common fields of
  the evaluation config (what `gpt2suite eval` records).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from tasks.leaderboard.config import BASELINE_MODEL, DUMMY_MODEL, LeaderboardConfig, resolve_model_path
from tasks.leaderboard.planning import Cell
from tasks.leaderboard.tasks_api import (adapter_eval_fields, config_hash, finetune_config, finetune_fields, get_task,
                                         model_config_hash, repo_relative, spec_fields, task_kind)
from tasks.methods.perplexity import STRIDE_RULE

# Bump when a runner's behaviour changes in a way that changes results: every cell re-runs.
# 2: the whole task spec and only the cell's fine-tuning method's fields are hashed; RunRecord format 2.
CELL_FORMAT = 2
EVAL_SUBSET = "first max_eval_examples of the eval split shuffled with seed 0 (tasks.evaluation.predict.eval_rows)"

_FINGERPRINTS: dict[tuple[str, int, int], str] = {}
_MODEL_FILES = ("config.json", "model.safetensors.index.json", "vocab.json", "merges.txt", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "adapter_config.json",
                "gpt2suite.json")


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
    """The FinetuneConfig overrides of a fine-tuning cell: its budgets, seed, no progress bar (settings of other
    methods among them are dropped by `finetune_config`)."""
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
    spec = get_task(cell.task)
    what: dict[str, Any] = {"format": CELL_FORMAT, "kind": cell.kind, "task": spec_fields(spec),
                            "split": spec.eval_split, "method": cell.method.name, "shots": cell.method.shots,
                            "seed": cell.seed, "model": model_identity(cfg, cell.model)}
    if cell.kind == "perplexity":
        what.update(max_len=b.ppl_max_len, stride=b.ppl_stride, max_chars=b.ppl_max_chars,
                    stride_default=STRIDE_RULE)  # a changed default changes the key
        return config_hash(what), what
    what.update(eval_limit=b.eval_limit, eval_subset=EVAL_SUBSET)
    if cell.kind == "baseline":
        what.update(baseline=cell.method.baseline)
    elif cell.kind == "fewshot":
        # the kind's answer rule(s): a changed ranking rule re-runs the prompted cells
        what.update(calibrate=cell.method.calibrate, scoring=task_kind(spec).prompt_scoring(spec),
                    fewshot_details="shots_used")
    elif cell.kind == "finetune":
        method = cell.method.finetune
        what["finetune"] = finetune_fields(finetune_config(spec, method, finetune_overrides(cell)), method)
    elif cell.kind == "adapter":
        folder = resolve_model_path(cell.adapter)
        method = cell.method.finetune
        what["adapter"] = {"path": repo_relative(folder), "weights": folder_fingerprint(folder)}
        what["evaluation"] = adapter_eval_fields(finetune_config(spec, method, adapter_overrides(cell)), method)
    return config_hash(what), what
