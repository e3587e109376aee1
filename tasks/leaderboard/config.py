"""A leaderboard config (configs/leaderboard/*.yaml; the keys are described in tasks/leaderboard/__init__.py):
typed, with layered budgets (`budgets` < `task_budgets[task]` < a method entry's `budgets`), checked on load."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt2core.errors import ConfigError
from gpt2core.paths import repo_path
from gpt2core.typed_config import from_dict, read_yaml
from tasks.leaderboard.methods import METHOD_FORMS, parse_method, unknown
from tasks.leaderboard.tasks_api import REPO_ROOT, LeaderboardError, scores_text, task_kind, valid_tasks

DUMMY_MODEL = "dummy"
BASELINE_MODEL = "none"  # baselines do not use a model: one row per task, whatever the models


@dataclass
class Budgets:
    """How much each cell may use. None = the component's default (or the lower layer's value)."""

    max_train_examples: int | None = None  # fine-tuning: seeded train subset (baselines train on the whole split)
    max_eval_examples: int | None = None  # every method: first N of a fixed shuffle of the eval split
    limit: int | None = None  # the same as max_eval_examples (the few-shot CLI's name)
    epochs: float | None = None  # fine-tuning
    max_steps: int | None = None  # fine-tuning (overrides epochs)
    batch_size: int | None = None  # fine-tuning, per device
    eval_batch_size: int | None = None  # fine-tuning / adapter evaluation
    max_length: int | None = None  # fine-tuning: tokens per input
    val_examples: int | None = None  # fine-tuning: validation subset scored at each evaluation
    threads: int | None = None  # torch CPU threads (does not change results)
    lm_batch_size: int | None = None  # zero/few-shot and perplexity: rows per forward pass (does not change results)
    ppl_max_len: int | None = None  # text-scoring (perplexity) row: window length (default: the model's n_positions)
    ppl_stride: int | None = None  # text-scoring row: tokens a window advances (default: ppl_max_len // 2)
    ppl_max_chars: int | None = None  # text-scoring row: score the first N characters only
    # Any other fine-tuning config key: a common one (lr, warmup, ...) or a method's setting (r, targets,
    # num_virtual_tokens, ...), which applies to that method's cells only.
    finetune: dict[str, Any] = field(default_factory=dict)

    def merged(self, other: "Budgets | None") -> "Budgets":
        if other is None:
            return self
        out = dataclasses.replace(self, finetune=dict(self.finetune))
        for f in dataclasses.fields(Budgets):
            value = getattr(other, f.name)
            if f.name == "finetune":
                out.finetune.update(value)
            elif value is not None:
                setattr(out, f.name, value)
        return out

    @property
    def eval_limit(self) -> int | None:
        return self.max_eval_examples if self.max_eval_examples is not None else self.limit


@dataclass
class ModelEntry:
    path: str  # a backbone folder (save_pretrained), or `dummy` (the DummyLM: prompting only)
    adapters: dict[str, str] = field(default_factory=dict)  # task -> folder written by `gpt2suite finetune`


@dataclass
class MethodEntry:
    name: str
    seeds: list[int] | None = None  # default: the config's seeds
    budgets: Budgets | None = None
    tasks: list[str] | None = None  # default: every task of the config


@dataclass
class LeaderboardConfig:
    models: dict[str, ModelEntry] = field(default_factory=dict)
    tasks: list[str] = field(default_factory=list)
    methods: list[MethodEntry] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    budgets: Budgets = field(default_factory=Budgets)
    task_budgets: dict[str, Budgets] = field(default_factory=dict)
    name: str = ""
    description: str = ""
    output: str = "leaderboard"  # rendered files: <out>/<output>.{md,csv,html}, <output>_{scores,pareto}.png
    source: str = "<dict>"  # the file it was read from (set by load_config)


@dataclass
class _RawConfig:  # the YAML's top level, before the nested mappings are typed
    models: dict[str, Any] = field(default_factory=dict)
    tasks: list[str] = field(default_factory=list)
    methods: list[Any] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    budgets: Budgets = field(default_factory=Budgets)
    task_budgets: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    description: str = ""
    output: str = "leaderboard"


def config_from_dict(data: Any, source: str = "<dict>") -> LeaderboardConfig:
    """A typed, checked config; an unknown key, a wrong type or an unknown task/method names the key and file."""
    if not isinstance(data, dict):
        raise LeaderboardError(f"{source}: expected a mapping of config keys, got {type(data).__name__}")
    try:
        raw = from_dict(_RawConfig, data, "")
        models = {}
        for name, entry in raw.models.items():
            entry = {"path": entry} if isinstance(entry, str) else entry
            if not isinstance(entry, dict):
                raise ConfigError(f"models.{name}: expected a folder path or a mapping with 'path', got {entry!r}")
            models[str(name)] = from_dict(ModelEntry, entry, f"models.{name}")
        methods = []
        for i, entry in enumerate(raw.methods):
            entry = {"name": entry} if isinstance(entry, str) else entry
            if not isinstance(entry, dict):
                raise ConfigError(f"methods[{i}]: expected a method name or a mapping with 'name', got {entry!r}")
            methods.append(from_dict(MethodEntry, entry, f"methods[{i}]"))
        task_budgets = {}
        for task, layer in raw.task_budgets.items():
            if not isinstance(layer, dict):
                raise ConfigError(f"task_budgets.{task}: expected a mapping of budget keys, got {layer!r}")
            task_budgets[str(task)] = from_dict(Budgets, layer, f"task_budgets.{task}")
    except ConfigError as e:
        raise LeaderboardError(f"{source}: {e}") from None
    cfg = LeaderboardConfig(models, [str(t) for t in raw.tasks], methods, list(raw.seeds), raw.budgets,
                            task_budgets, raw.name, raw.description, raw.output, source)
    validate_config(cfg)
    return cfg


def load_config(path: str | os.PathLike) -> LeaderboardConfig:
    p = Path(path)
    if not p.is_file():
        raise LeaderboardError(f"leaderboard config {p} does not exist (see {REPO_ROOT / 'configs' / 'leaderboard'})")
    cfg = config_from_dict(_read_with_base(p), str(p))
    cfg.name = cfg.name or p.stem
    return cfg


def _read_with_base(p: Path, seen: tuple[Path, ...] = ()) -> Any:
    """A config file's mapping over the one its `extends:` names (a file beside it): its top-level keys replace the
    base's, except `budgets`, merged key by key, and `task_budgets`, merged task by task (so gpu.yaml states only
    what differs from full.yaml)."""
    try:
        data = read_yaml(p, "leaderboard config")
    except ConfigError as e:
        raise LeaderboardError(str(e)) from None
    if not isinstance(data, dict) or "extends" not in data:
        return data
    name = data.pop("extends")
    base = (p.parent / str(name)).resolve()
    if base in seen or base == p.resolve():
        raise LeaderboardError(f"{p}: extends: {name!r} leads back to itself; name a config that does not extend it")
    if not base.is_file():
        raise LeaderboardError(f"{p}: extends: {name!r} is not a file beside it; name a leaderboard config such as "
                               "full.yaml")
    merged = _read_with_base(base, seen + (p.resolve(),))
    if not isinstance(merged, dict):
        raise LeaderboardError(f"{base}: expected a mapping of config keys, got {type(merged).__name__}")
    for key, value in data.items():
        below = merged.get(key)
        if key == "budgets" and isinstance(value, dict) and isinstance(below, dict):
            merged[key] = _merge_budgets(below, value)
        elif key == "task_budgets" and isinstance(value, dict) and isinstance(below, dict):
            merged[key] = {**below, **{t: _merge_budgets(below[t], layer) if isinstance(below.get(t), dict)
                                       and isinstance(layer, dict) else layer for t, layer in value.items()}}
        else:
            merged[key] = value
    return merged


def _merge_budgets(below: dict[str, Any], above: dict[str, Any]) -> dict[str, Any]:
    out = {**below, **above}
    if isinstance(below.get("finetune"), dict) and isinstance(above.get("finetune"), dict):
        out["finetune"] = {**below["finetune"], **above["finetune"]}
    return out


def validate_config(cfg: LeaderboardConfig) -> None:
    src = cfg.source
    if not cfg.models:
        raise LeaderboardError(f"{src}: no models (models: {{name: path-of-a-backbone-folder}})")
    if not cfg.tasks:
        raise LeaderboardError(f"{src}: no tasks (valid tasks: {', '.join(valid_tasks())})")
    for t in cfg.tasks:
        if t not in valid_tasks():
            raise unknown("task", t, valid_tasks(), f"{src}: tasks")
    if len(set(cfg.tasks)) != len(cfg.tasks):
        raise LeaderboardError(f"{src}: tasks lists a task twice")
    if not cfg.methods and not all(scores_text(t) for t in cfg.tasks):
        raise LeaderboardError(f"{src}: no methods (valid methods: {', '.join(METHOD_FORMS)})")
    seen: dict[tuple[str, str, int | None], str] = {}
    for i, m in enumerate(cfg.methods):
        spec = parse_method(m.name, f"{src}: methods[{i}]")
        if m.seeds is not None and not m.seeds:
            raise LeaderboardError(f"{src}: methods[{i}] ({m.name}): seeds is empty")
        if m.tasks is not None and not m.tasks:
            raise LeaderboardError(f"{src}: methods[{i}] ({m.name}): tasks is empty (leave it out for every task)")
        for t in m.tasks or []:
            if t not in cfg.tasks:
                raise unknown("task", t, cfg.tasks,
                                   f"{src}: methods[{i}] ({m.name}).tasks (tasks of this config)")
        for t in m.tasks or cfg.tasks:  # one method may be listed twice, for disjoint sets of tasks
            ident = (t, spec.row_method, spec.shots)
            if ident in seen:
                raise LeaderboardError(f"{src}: methods lists {m.name!r} and {seen[ident]!r} for task {t!r}, the "
                                       "same method; give them disjoint `tasks:`")
            seen[ident] = m.name
    if not cfg.seeds:
        raise LeaderboardError(f"{src}: seeds is empty (e.g. seeds: [0])")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", cfg.output):
        raise LeaderboardError(f"{src}: output must be a plain file name stem such as leaderboard_quick, got "
                               f"{cfg.output!r}")
    for t in cfg.task_budgets:
        if t not in cfg.tasks:
            raise unknown("task", t, cfg.tasks, f"{src}: task_budgets (tasks of this config)")
    for name, entry in cfg.models.items():
        if name == BASELINE_MODEL:
            raise LeaderboardError(f"{src}: models: the name {BASELINE_MODEL!r} is reserved for the baselines' rows")
        tunable = [t for t in valid_tasks() if task_kind(t).finetune_methods]
        for t in entry.adapters:
            if t not in tunable:
                raise unknown("fine-tunable task", t, tunable, f"{src}: models.{name}.adapters")
    for layer_name, layer in [("budgets", cfg.budgets),
                              *((f"task_budgets.{t}", b) for t, b in cfg.task_budgets.items()),
                              *((f"methods.{m.name}.budgets", m.budgets) for m in cfg.methods if m.budgets)]:
        for f in dataclasses.fields(Budgets):
            value = getattr(layer, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
                raise LeaderboardError(f"{src}: {layer_name}.{f.name} must be positive (or null), got {value}")


def resolve_model_path(path: str) -> Path:
    """`${REPO}` / `${DATA_DIR}` expand; a relative path is taken from the repository root (callers keep `dummy`)."""
    return repo_path(path)
