"""The leaderboard: run every (model, task, method, seed) cell a config lists, reusing run records, then render.

    gpt2suite leaderboard --config configs/leaderboard/quick.yaml [--out results] [--dry-run]

A config (configs/leaderboard/*.yaml) names models (name -> backbone folder, optionally with already trained
adapters per task), tasks (the registry's plus `wikitext2`, the perplexity row), methods, seeds and budgets:

    models: {default: results/backbones/default}
    tasks: [sst2, squad, wikitext2]
    methods: [baseline:majority, zero-shot, few-shot:4, {name: finetune:lora, seeds: [0, 1]}]
    seeds: [0]
    budgets: {max_eval_examples: 200, epochs: 1, threads: 1}
    task_budgets: {squad: {max_eval_examples: 100}}

Methods: `baseline:<majority|tfidf-lr|lead|copy|best-sentence|best-sentence-span>` (tasks/baselines.py),
`zero-shot`, `few-shot:K`, `few-shot-calibrated:K` (tasks/fewshot.py), `finetune:<full|linear|lora|prompt|prefix>`
(tasks/finetune.py). A method that does not apply to a task (baseline:copy on sst2, finetune:linear on a generation
task, calibration outside classification, fine-tuning the `dummy` model) is skipped with a note. Budgets layer:
`budgets` < `task_budgets[task]` < a method entry's `budgets`.

Every method of a task is scored on the same examples: the first `max_eval_examples` of a fixed (seed-0) shuffle
of the task's eval split (`tasks.finetune.eval_rows`), so rows can be compared pairwise, example by example.
Seeds: few-shot demos and fine-tuning depend on the seed; the other cells (baselines, which train on the whole
train split, zero-shot, perplexity, trained adapters) are deterministic and run once, with the first seed.

Cache: a cell's key is a hash of everything that affects its result (task + version + prompt/template fields, the
method, shots, seed, model path + config hash + a hash of its weight files, the budgets that apply, the resolved
fine-tuning config, `CELL_FORMAT`). A cell's runner writes its record + predictions (tasks/records.py) into a
staging folder; they are then moved into `<out>/runs` as `<records.record_name>__lb<key>.json` (and
`.predictions.jsonl`; the record last, atomically), stamped with the key under `leaderboard`: cells never share
a file and records of the other commands are never replaced. `<out>/runs/index.json` maps keys to records; a key
missing from it (or an unreadable index) makes a scan of the folder for stamped records. Fine-tuned models go to
`--models-dir` (default runs/leaderboard/<task>/<method>-<model>-seed<seed>-<key>). A cached record that cannot
be read (or whose predictions cannot) is reported and its cell re-run; nothing else is deleted. A cell that fails
is reported and the others go on (exit status 1); an interrupted run keeps every record completed so far and the
next run does the rest.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.records import atomic_write_text
from tasks.registry import REPO_ROOT, TASKS, TaskSpec, get_task

CELL_FORMAT = 1  # bump when a runner's behaviour changes in a way that changes results: every cell re-runs
INDEX_NAME = "index.json"
PERPLEXITY_TASK = "wikitext2"
DUMMY_MODEL = "dummy"
BASELINE_MODEL = "none"  # baselines do not use a model: one row per task, whatever the models
DEFAULT_OUT = REPO_ROOT / "results"
DEFAULT_MODELS_DIR = REPO_ROOT / "runs" / "leaderboard"
EVAL_SUBSET = "first max_eval_examples of the eval split shuffled with seed 0 (tasks.finetune.eval_rows)"
PRIMARY = {PERPLEXITY_TASK: "bits_per_byte"}

# Config names -> tasks/baselines.py method names.
BASELINES = {"majority": "majority", "tfidf-lr": "tfidf-lr", "lead": "lead-k", "lead-k": "lead-k",
             "copy": "copy-source", "copy-source": "copy-source", "best-sentence": "best-sentence",
             "best-sentence-span": "best-sentence-span"}
_SHORT = {"lead-k": "lead", "copy-source": "copy"}  # rows use the short names
METHOD_FORMS = ("baseline:<" + "|".join(BASELINES) + ">", "zero-shot", "few-shot:K", "few-shot-calibrated:K",
                "finetune:<full|linear|lora|prompt|prefix>")


class LeaderboardError(ValueError):
    """A leaderboard config or request that cannot be run as written."""


# ---- config ----------------------------------------------------------------------------------------------


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
    ppl_max_len: int | None = None  # wikitext2: window length (default: the model's n_positions)
    ppl_stride: int | None = None  # wikitext2: tokens a window advances (default: ppl_max_len)
    ppl_max_chars: int | None = None  # wikitext2: score the first N characters only
    finetune: dict[str, Any] = field(default_factory=dict)  # any other FinetuneConfig key (lr, lora_r, ...)

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


def valid_tasks() -> list[str]:
    return [*TASKS, PERPLEXITY_TASK]


def _unknown(kind: str, name: str, valid: list[str] | tuple[str, ...], where: str) -> LeaderboardError:
    close = difflib.get_close_matches(name, list(valid), n=2)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return LeaderboardError(f"{where}: unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid)}")


def config_from_dict(data: Any, source: str = "<dict>") -> LeaderboardConfig:
    """A typed, checked config; an unknown key, a wrong type or an unknown task/method names the key and file."""
    from gpt2core.pretrain.config import ConfigError, _from_dict

    if not isinstance(data, dict):
        raise LeaderboardError(f"{source}: expected a mapping of config keys, got {type(data).__name__}")
    try:
        raw = _from_dict(_RawConfig, data, "")
        models = {}
        for name, entry in raw.models.items():
            entry = {"path": entry} if isinstance(entry, str) else entry
            if not isinstance(entry, dict):
                raise ConfigError(f"models.{name}: expected a folder path or a mapping with 'path', got {entry!r}")
            models[str(name)] = _from_dict(ModelEntry, entry, f"models.{name}")
        methods = []
        for i, entry in enumerate(raw.methods):
            entry = {"name": entry} if isinstance(entry, str) else entry
            if not isinstance(entry, dict):
                raise ConfigError(f"methods[{i}]: expected a method name or a mapping with 'name', got {entry!r}")
            methods.append(_from_dict(MethodEntry, entry, f"methods[{i}]"))
        task_budgets = {}
        for task, layer in raw.task_budgets.items():
            if not isinstance(layer, dict):
                raise ConfigError(f"task_budgets.{task}: expected a mapping of budget keys, got {layer!r}")
            task_budgets[str(task)] = _from_dict(Budgets, layer, f"task_budgets.{task}")
    except ConfigError as e:
        raise LeaderboardError(f"{source}: {e}") from None
    cfg = LeaderboardConfig(models, [str(t) for t in raw.tasks], methods, list(raw.seeds), raw.budgets,
                            task_budgets, raw.name, raw.description, raw.output, source)
    validate_config(cfg)
    return cfg


def load_config(path: str | os.PathLike) -> LeaderboardConfig:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"leaderboard config {p} does not exist (see {REPO_ROOT / 'configs' / 'leaderboard'})")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise LeaderboardError(f"{p}: not valid YAML ({e})") from None
    cfg = config_from_dict(data, str(p))
    cfg.name = cfg.name or p.stem
    return cfg


@dataclass(frozen=True)
class MethodSpec:
    """A parsed method name: what runs and how its rows are labelled."""

    name: str  # as in the config: few-shot:4
    kind: str  # baseline | fewshot | finetune
    row_method: str  # the leaderboard's method column: baseline:lead, zero-shot, few-shot, finetune:lora, ...
    shots: int | None = None
    calibrate: bool = False
    baseline: str | None = None  # tasks/baselines.py name
    finetune: str | None = None  # tasks/adapters.py name


def parse_method(name: str, where: str = "methods") -> MethodSpec:
    from tasks.adapters import METHODS as FT_METHODS

    bad = LeaderboardError(f"{where}: unknown method {name!r}. Valid methods: {', '.join(METHOD_FORMS)}")
    if name == "zero-shot":
        return MethodSpec(name, "fewshot", "zero-shot", shots=0)
    head, _, arg = name.partition(":")
    if head == "baseline":
        if arg not in BASELINES:
            raise _unknown("baseline", arg, list(BASELINES), f"{where}: {name!r}")
        return MethodSpec(name, "baseline", f"baseline:{_SHORT.get(arg, arg)}", baseline=BASELINES[arg])
    if head in ("few-shot", "few-shot-calibrated"):
        if not re.fullmatch(r"\d+", arg):
            raise LeaderboardError(f"{where}: {name!r} needs a number of shots, e.g. {head}:4")
        k = int(arg)
        if head == "few-shot" and k == 0:
            raise LeaderboardError(f"{where}: few-shot:0 is zero-shot; write 'zero-shot'")
        return MethodSpec(name, "fewshot", head, shots=k, calibrate=head == "few-shot-calibrated")
    if head == "finetune":
        if arg not in FT_METHODS:
            raise _unknown("fine-tuning method", arg, FT_METHODS, f"{where}: {name!r}")
        return MethodSpec(name, "finetune", f"finetune:{arg}", finetune=arg)
    raise bad


def validate_config(cfg: LeaderboardConfig) -> None:
    src = cfg.source
    if not cfg.models:
        raise LeaderboardError(f"{src}: no models (models: {{name: path-of-a-backbone-folder}})")
    if not cfg.tasks:
        raise LeaderboardError(f"{src}: no tasks (valid tasks: {', '.join(valid_tasks())})")
    for t in cfg.tasks:
        if t not in valid_tasks():
            raise _unknown("task", t, valid_tasks(), f"{src}: tasks")
    if len(set(cfg.tasks)) != len(cfg.tasks):
        raise LeaderboardError(f"{src}: tasks lists a task twice")
    if not cfg.methods and cfg.tasks != [PERPLEXITY_TASK]:
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
                raise _unknown("task", t, cfg.tasks, f"{src}: methods[{i}] ({m.name}).tasks (tasks of this config)")
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
            raise _unknown("task", t, cfg.tasks, f"{src}: task_budgets (tasks of this config)")
    for name, entry in cfg.models.items():
        if name == BASELINE_MODEL:
            raise LeaderboardError(f"{src}: models: the name {BASELINE_MODEL!r} is reserved for the baselines' rows")
        for t in entry.adapters:
            if t not in TASKS:
                raise _unknown("task", t, list(TASKS), f"{src}: models.{name}.adapters")
    for layer_name, layer in [("budgets", cfg.budgets),
                              *((f"task_budgets.{t}", b) for t, b in cfg.task_budgets.items()),
                              *((f"methods.{m.name}.budgets", m.budgets) for m in cfg.methods if m.budgets)]:
        for f in dataclasses.fields(Budgets):
            value = getattr(layer, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
                raise LeaderboardError(f"{src}: {layer_name}.{f.name} must be positive (or null), got {value}")


def resolve_model_path(path: str) -> Path:
    """`dummy` stays; `${REPO}` / `${SHARED_DATA}` expand; a relative path is taken from the repository root."""
    from gpt2core.pretrain.config import expand_path

    p = expand_path(path)
    return p if p.is_absolute() else REPO_ROOT / p


# ---- cells -----------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One run: a (model, task, method, seed) with its budgets. `kind`: baseline | fewshot | finetune | adapter |
    perplexity."""

    model: str
    task: str
    method: MethodSpec
    seed: int
    budgets: Budgets
    kind: str
    adapter: str | None = None

    @property
    def label(self) -> str:
        extra = " (trained adapter)" if self.kind == "adapter" else ""
        return f"{self.task} | {self.method.name}{extra} | {self.model} | seed {self.seed}"

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "task": self.task, "method": self.method.name,
                "row_method": self.method.row_method,
                "shots": self.method.shots, "seed": self.seed, "kind": self.kind, "adapter": self.adapter}


@dataclass
class Note:
    cell: str
    message: str


def _seed_matters(method: MethodSpec) -> bool:
    """Few-shot demos and fine-tuning depend on the seed; every other cell is deterministic."""
    return method.kind == "finetune" or (method.kind == "fewshot" and bool(method.shots))


def plan(cfg: LeaderboardConfig, only_tasks: list[str] | None = None, only_models: list[str] | None = None,
         only_methods: list[str] | None = None) -> tuple[list[Cell], list[Note]]:
    """The cells the config asks for, in run order (task by task), and notes on the ones that do not apply.
    `only_*` narrow it to some of the config's tasks, models and methods (names as in the config)."""
    from tasks.adapters import applicable_methods
    from tasks.baselines import METHODS as BASELINE_METHODS, baseline_family

    for t in only_tasks or []:
        if t not in cfg.tasks:
            raise _unknown("task", t, cfg.tasks, f"--task (tasks of {cfg.source})")
    for m in only_models or []:
        if m not in cfg.models:
            raise _unknown("model", m, list(cfg.models), f"--model (models of {cfg.source})")
    config_methods = list(dict.fromkeys(m.name for m in cfg.methods))
    for m in only_methods or []:
        if m not in config_methods:
            raise _unknown("method", m, config_methods, f"--method (methods of {cfg.source})")
    tasks = [t for t in cfg.tasks if not only_tasks or t in only_tasks]
    models = [m for m in cfg.models if not only_models or m in only_models]
    cells: list[Cell] = []
    notes: list[Note] = []
    seen: set[tuple[Any, ...]] = set()

    def add(cell: Cell) -> None:
        ident = (cell.model, cell.task, cell.method.name, cell.seed, cell.kind)
        if ident not in seen:
            seen.add(ident)
            cells.append(cell)

    for task_name in tasks:
        task_layer = cfg.budgets.merged(cfg.task_budgets.get(task_name))
        if task_name == PERPLEXITY_TASK:
            if only_methods:
                continue  # perplexity is not one of the config's methods: it runs when no method is picked
            ppl = MethodSpec("perplexity", "perplexity", "zero-shot", shots=0)
            for model in models:
                add(Cell(model, task_name, ppl, cfg.seeds[0], task_layer, "perplexity"))
            continue
        spec = get_task(task_name)
        for entry in cfg.methods:
            if (entry.tasks is not None and task_name not in entry.tasks) or \
                    (only_methods and entry.name not in only_methods):
                continue
            method = parse_method(entry.name)
            budgets = task_layer.merged(entry.budgets)
            seeds = entry.seeds or cfg.seeds
            if method.kind == "baseline":
                family = baseline_family(spec)
                if method.baseline not in BASELINE_METHODS[family]:
                    notes.append(Note(f"{task_name} | {method.name}", f"does not apply to {task_name} ({family}: "
                                      f"{', '.join(BASELINE_METHODS[family])}); skipped"))
                    continue
                add(Cell(BASELINE_MODEL, task_name, method, seeds[0], budgets, "baseline"))
                continue
            if method.calibrate and spec.kind != "classification":
                notes.append(Note(f"{task_name} | {method.name}", f"calibration applies to classification tasks "
                                  f"only ({task_name} is {spec.kind}); skipped"))
                continue
            if method.kind == "finetune" and method.finetune not in applicable_methods(spec):
                notes.append(Note(f"{task_name} | {method.name}", f"does not apply to {task_name} ({spec.kind}: "
                                  f"{', '.join(applicable_methods(spec))}); skipped"))
                continue
            for model in models:
                entry_m = cfg.models[model]
                if method.kind == "finetune":
                    adapter = entry_m.adapters.get(task_name)
                    if adapter is not None and _adapter_method(adapter, task_name, model) == method.finetune:
                        continue  # the trained adapter (below) takes this cell's place
                    if entry_m.path == DUMMY_MODEL:
                        notes.append(Note(f"{task_name} | {method.name} | {model}",
                                          "the dummy model (DummyLM) cannot be fine-tuned; skipped"))
                        continue
                for seed in (seeds if _seed_matters(method) else seeds[:1]):
                    add(Cell(model, task_name, method, seed, budgets, method.kind))
        for model in models:
            adapter = cfg.models[model].adapters.get(task_name)
            if adapter is not None:
                m = _adapter_method(adapter, task_name, model)
                spec_m = MethodSpec(f"finetune:{m}", "adapter", f"finetune:{m}")
                add(Cell(model, task_name, spec_m, cfg.seeds[0], task_layer, "adapter", adapter=adapter))
    return cells, notes


def _adapter_method(adapter: str, task: str, model: str) -> str:
    from tasks.adapters import read_meta

    folder = resolve_model_path(adapter)
    meta = read_meta(folder)
    if meta is None:
        raise LeaderboardError(f"models.{model}.adapters.{task}: {folder} holds no gpt2suite.json; give a folder "
                               "written by `gpt2suite finetune` (its <out>/model)")
    if meta.get("task") != task:
        raise LeaderboardError(f"models.{model}.adapters.{task}: {folder} was trained for task {meta.get('task')!r}")
    return str(meta["method"])


# ---- cache keys ------------------------------------------------------------------------------------------


def task_fields(spec: TaskSpec) -> dict[str, Any]:
    """What of a task changes a result (not `to_row`, a function)."""
    return {k: getattr(spec, k) for k in ("name", "kind", "version", "local_dir", "train_split", "eval_split",
                                          "label_names", "metrics", "primary_metric", "separator", "prompt",
                                          "derived_splits", "max_target_tokens")}


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
    from tasks.records import model_config_hash, repo_relative

    if model == BASELINE_MODEL:
        return {"path": BASELINE_MODEL}
    path = cfg.models[model].path
    if path == DUMMY_MODEL:
        return {"path": DUMMY_MODEL}
    folder = resolve_model_path(path)
    return {"path": repo_relative(folder), "config_hash": model_config_hash(folder),
            "weights": folder_fingerprint(folder)}


def finetune_overrides(cell: Cell) -> dict[str, Any]:
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


_NOT_RESULTS = ("progress", "threads", "logging_steps")  # FinetuneConfig keys that do not change a result


def cell_key(cfg: LeaderboardConfig, cell: Cell) -> tuple[str, dict[str, Any]]:
    """(the cache key, what it hashes) of a cell."""
    from tasks.records import config_hash, repo_relative

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
            from tasks.finetune import load_finetune_config

            ft = load_finetune_config(spec, cell.method.finetune, overrides=finetune_overrides(cell))
            what["finetune"] = {k: v for k, v in dataclasses.asdict(ft).items() if k not in _NOT_RESULTS}
        elif cell.kind == "adapter":
            folder = resolve_model_path(cell.adapter)
            what["adapter"] = {"path": repo_relative(folder), "weights": folder_fingerprint(folder)}
            what["overrides"] = {k: v for k, v in _adapter_overrides(cell).items() if k not in _NOT_RESULTS}
    return config_hash(what), what


def _adapter_overrides(cell: Cell) -> dict[str, Any]:
    b = cell.budgets
    out = {k: v for k, v in b.finetune.items()}
    for name in ("eval_batch_size", "max_length", "threads"):
        if getattr(b, name) is not None:
            out[name] = getattr(b, name)
    return out


# ---- the record store --------------------------------------------------------------------------------------


@dataclass
class Cached:
    record: dict[str, Any]
    path: Path
    rows: list[dict[str, Any]] | None  # per-example predictions (None for perplexity)


def _check_rows(record: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The predictions rows can be resampled: one per example, with an id, a prediction, references and the
    primary metric's per-example score."""
    from tasks.bootstrap import Run, is_mean_metric
    from tasks.records import RecordError

    where = f"predictions {record['predictions']}"
    if len(rows) != record["n_examples"]:
        raise RecordError(f"{where} have {len(rows)} rows, not the record's {record['n_examples']}")
    try:
        run = Run.from_rows(rows)
    except (KeyError, TypeError, ValueError) as e:
        raise RecordError(f"{where} are not per-example predictions ({type(e).__name__}: {e})") from None
    spec, metric = get_task(record["task"]), primary_metric(record["task"])
    if is_mean_metric(spec, metric) and any(metric not in s for s in run.scores):
        raise RecordError(f"{where} lack the per-example {metric!r} score")


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
        """Add every record in the folder that carries a leaderboard cell key to the index."""
        if self._scanned:
            return
        self._scanned = True
        for p in sorted(self.runs_dir.glob("*.json")):
            if p.name == INDEX_NAME:
                continue
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
                key = data["leaderboard"]["cell_key"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a leaderboard record (or unreadable: reported when its cell looks it up)
            if key not in self.index:
                self.index[key] = {"record": p.name, **data["leaderboard"].get("cell", {})}
                self.dirty = True

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
        from tasks.records import RecordError, read_predictions, read_record

        path = self._path(entry)
        try:
            record = read_record(path)
            stamp = record.get("leaderboard") or {}
            if stamp.get("cell_key") != key:
                return None, f"{path} now holds another run (cell key {stamp.get('cell_key')!r})"
            rows = None
            if record.get("predictions"):
                rows = read_predictions(record["predictions"])
                _check_rows(record, rows)
            elif record["task"] != PERPLEXITY_TASK:
                return None, f"{path} names no predictions file"
        except RecordError as e:
            return None, str(e)
        return Cached(record, path, rows), None

    def add(self, key: str, path: Path, cell: Cell) -> None:
        rel = path.name if path.parent.resolve() == self.runs_dir.resolve() else str(path.resolve())
        self.index[key] = {"record": rel, **cell.describe()}
        self.save()

    def save(self) -> None:
        text = json.dumps({"format": 1, "cells": self.index}, indent=1, sort_keys=True) + "\n"
        atomic_write_text(self.index_path, text)
        self.dirty = False


# ---- running cells ---------------------------------------------------------------------------------------


class Context:
    """What cells share within one invocation: loaded splits, loaded models, output folders."""

    def __init__(self, cfg: LeaderboardConfig, runs_dir: Path, models_dir: Path):
        self.cfg = cfg
        self.runs_dir = runs_dir
        self.models_dir = models_dir
        self._splits: dict[tuple[str, str], Any] = {}
        self._lists: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._lms: dict[tuple[str, int], tuple[Any, int | None]] = {}

    def staging(self, key: str) -> Path:
        """Where a cell's runner writes; `commit` then moves the files into the run folder under unique names."""
        return self.runs_dir / ".staging" / key

    def split(self, task: str, name: str) -> Any:
        from tasks.registry import load_split

        if (task, name) not in self._splits:
            self._splits[(task, name)] = load_split(task, name)
        return self._splits[(task, name)]

    def split_list(self, task: str, name: str) -> list[dict[str, Any]]:
        if (task, name) not in self._lists:
            self._lists[(task, name)] = self.split(task, name).to_list()
        return self._lists[(task, name)]

    def forget_task(self, task: str) -> None:
        for cache in (self._splits, self._lists):
            for k in [k for k in cache if k[0] == task]:
                del cache[k]

    def lm(self, model: str, batch_size: int) -> tuple[Any, int | None]:
        from tasks.lm_eval import DummyLM, GPT2LM

        if (model, batch_size) not in self._lms:
            path = self.cfg.models[model].path
            if path == DUMMY_MODEL:
                self._lms[(model, batch_size)] = (DummyLM(), None)
            else:
                lm = GPT2LM.from_path(resolve_model_path(path), batch_size=batch_size)
                self._lms[(model, batch_size)] = (lm, sum(p.numel() for p in lm.model.parameters()))
        return self._lms[(model, batch_size)]


def _set_threads(budgets: Budgets) -> None:
    if budgets.threads is not None:
        import torch

        torch.set_num_threads(budgets.threads)


def _eval_rows(ctx: Context, spec: TaskSpec, budgets: Budgets) -> list[dict[str, Any]]:
    from tasks.finetune import eval_rows

    return eval_rows(spec, spec.eval_split, budgets.eval_limit, ctx.split(spec.name, spec.eval_split)).to_list()


def preflight(ctx: Context, cell: Cell) -> None:
    """Bad input a cell would fail on, checked before any cell runs (the data it reads is loaded anyway)."""
    if cell.kind == "fewshot" and cell.method.shots:
        spec = get_task(cell.task)
        n = len(ctx.split(cell.task, spec.train_split))
        if cell.method.shots > n:
            raise LeaderboardError(f"{cell.label}: {cell.method.shots} shots asked but the {cell.task} train split "
                                   f"has only {n} examples; use fewer shots")
    if cell.kind in ("fewshot", "finetune", "perplexity") and cell.model != BASELINE_MODEL:
        path = ctx.cfg.models[cell.model].path
        if path != DUMMY_MODEL and not (resolve_model_path(path) / "config.json").is_file():
            raise LeaderboardError(f"model {cell.model!r}: {resolve_model_path(path)} is not a model folder (no "
                                   "config.json); give a folder written by save_pretrained, or 'dummy'")


def execute_cell(ctx: Context, cell: Cell, key: str) -> Path:
    """Run one cell with the project's own functions; returns the run record written (in `ctx.staging(key)`)."""
    return RUNNERS[cell.kind](ctx, cell, key)


def _run_baseline(ctx: Context, cell: Cell, key: str) -> Path:
    from tasks.baselines import run_baseline, write_baseline_run

    spec = get_task(cell.task)
    train = ctx.split_list(cell.task, spec.train_split) if spec.kind == "classification" else None
    result = run_baseline(spec, cell.method.baseline, seed=cell.seed, train_rows=train,
                          eval_rows=_eval_rows(ctx, spec, cell.budgets))
    result.config["seed"] = cell.seed
    return write_baseline_run(result, runs_dir=ctx.staging(key))


def _run_fewshot(ctx: Context, cell: Cell, key: str) -> Path:
    from tasks.fewshot import run_fewshot, write_run

    spec = get_task(cell.task)
    _set_threads(cell.budgets)
    lm, n_params = ctx.lm(cell.model, cell.budgets.lm_batch_size or 8)
    train = ctx.split_list(cell.task, spec.train_split) if cell.method.shots else None
    result = run_fewshot(lm, spec, cell.method.shots or 0, seed=cell.seed, calibrate=cell.method.calibrate,
                         train_rows=train, eval_rows=_eval_rows(ctx, spec, cell.budgets))
    model_path = ctx.cfg.models[cell.model].path
    model_path = model_path if model_path == DUMMY_MODEL else str(resolve_model_path(model_path))
    return write_run(result, model_path, None, runs_dir=ctx.staging(key), total_params=n_params,
                     extra={"runtime": {"batch_size": cell.budgets.lm_batch_size or 8}})


def _run_finetune(ctx: Context, cell: Cell, key: str) -> Path:
    from tasks.finetune import finetune, load_finetune_config

    spec = get_task(cell.task)
    cfg = load_finetune_config(spec, cell.method.finetune, overrides=finetune_overrides(cell))
    rows = {name: ctx.split(cell.task, name) for name in {spec.train_split, "validation", spec.eval_split}}
    model_path = resolve_model_path(ctx.cfg.models[cell.model].path)
    out = ctx.models_dir / cell.task / f"{cell.method.finetune}-{cell.model}-seed{cell.seed}-{key[:8]}"
    record = finetune(spec, cell.method.finetune, model_path, cfg, out_dir=out, runs_dir=ctx.staging(key), rows=rows)
    if record is None:  # pragma: no cover - only non-main DDP processes get None
        raise RuntimeError("fine-tuning returned no record")
    return Path(record["_path"])


def _run_adapter(ctx: Context, cell: Cell, key: str) -> Path:
    from tasks.adapters import read_meta
    from tasks.predict import evaluate

    spec = get_task(cell.task)
    folder = resolve_model_path(cell.adapter)
    backbone = resolve_model_path(ctx.cfg.models[cell.model].path)
    full = (read_meta(folder) or {}).get("method") == "full"
    record = evaluate(spec, str(folder if full else backbone), adapter=None if full else str(folder),
                      limit=cell.budgets.eval_limit, overrides=_adapter_overrides(cell),
                      runs_dir=str(ctx.staging(key)), rows=ctx.split(cell.task, spec.eval_split))
    return Path(record["_path"])


def _run_perplexity(ctx: Context, cell: Cell, key: str) -> Path:
    from tasks.perplexity import evaluate_wikitext2, write_perplexity_run

    _set_threads(cell.budgets)
    b = cell.budgets
    lm, n_params = ctx.lm(cell.model, b.lm_batch_size or 8)
    max_len = b.ppl_max_len or lm.max_length
    result = evaluate_wikitext2(lm, stride=b.ppl_stride or max_len, max_len=max_len, max_chars=b.ppl_max_chars)
    model_path = ctx.cfg.models[cell.model].path
    model_path = model_path if model_path == DUMMY_MODEL else str(resolve_model_path(model_path))
    return write_perplexity_run(result, model_path, runs_dir=ctx.staging(key), total_params=n_params)


RUNNERS: dict[str, Callable[[Context, Cell, str], Path]] = {
    "baseline": _run_baseline, "fewshot": _run_fewshot, "finetune": _run_finetune, "adapter": _run_adapter,
    "perplexity": _run_perplexity,
}


def commit(ctx: Context, staged: Path, key: str, cell: Cell) -> tuple[dict[str, Any], Path]:
    """Move a runner's record + predictions from the cell's staging folder into the run folder, as
    `<records.record_name minus .json>__lb<key>.json` (two cells never share a file, and records written by the
    other commands are never replaced), stamped with the cell key under `leaderboard`. The record is written last,
    atomically, so a record always has its predictions. Returns (record, its path)."""
    import shutil

    from tasks.records import read_record, repo_relative, write_record

    record = read_record(staged)
    name = staged.name[: -len(".json")] + f"__lb{key[:10]}"
    if record.get("predictions"):
        src = Path(record["predictions"])
        src = src if src.is_absolute() else REPO_ROOT / src
        dst = ctx.runs_dir / f"{name}.predictions.jsonl"
        os.replace(src, dst)
        record["predictions"] = repo_relative(dst)
    record["leaderboard"] = {"cell_key": key, "cell": cell.describe(), "config": ctx.cfg.source,
                             "eval_subset": EVAL_SUBSET if cell.kind != "perplexity" else None,
                             "budgets": dataclasses.asdict(cell.budgets)}
    path = write_record(record, ctx.runs_dir / f"{name}.json")
    shutil.rmtree(ctx.staging(key), ignore_errors=True)
    try:
        ctx.staging(key).parent.rmdir()  # only when no other cell's staging folder is left
    except OSError:
        pass
    return record, path


# ---- the whole run -------------------------------------------------------------------------------------------


@dataclass
class CellStatus:
    cell: Cell
    key: str
    status: str  # cached | ran | failed | planned (dry run) | missing (render only)
    record: dict[str, Any] | None = None
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


def run_leaderboard(config: str | os.PathLike | LeaderboardConfig, out: str | os.PathLike = DEFAULT_OUT,
                    dry_run: bool = False, render_only: bool = False, models_dir: str | os.PathLike | None = None,
                    only_tasks: list[str] | None = None, only_models: list[str] | None = None,
                    only_methods: list[str] | None = None,
                    command: str | None = None, log: Callable[[str], None] | None = None) -> LeaderboardResult:
    """Run what is missing (unless `dry_run` / `render_only`), then render into `out` (unless `dry_run`)."""
    log = log or (lambda s: print(s, flush=True))
    t_start = time.perf_counter()
    cfg = config if isinstance(config, LeaderboardConfig) else load_config(config)
    out = Path(out)
    runs_dir = out / "runs"
    cells, notes = plan(cfg, only_tasks, only_models, only_methods)
    for n in notes:
        log(f"skip  {n.cell}: {n.message}")
    store = RecordStore(runs_dir, log)
    ctx = Context(cfg, runs_dir, Path(models_dir) if models_dir else DEFAULT_MODELS_DIR)

    statuses: list[CellStatus] = []
    for cell in cells:
        key, _ = cell_key(cfg, cell)
        cached, problem = store.lookup(key)
        if cached is not None:
            statuses.append(CellStatus(cell, key, "cached", cached.record, cached.path, cached.rows))
            continue
        if problem:
            log(f"warning: the cached record of {cell.label} cannot be used: {problem}; "
                + ("it will be re-run" if not (dry_run or render_only) else "re-run it"))
        statuses.append(CellStatus(cell, key, "planned", message=problem))
    todo = [s for s in statuses if s.status == "planned"]
    log(f"{cfg.source}: {len(cells)} cells: {len(cells) - len(todo)} cached, {len(todo)} to run, "
        f"{len(notes)} skipped")
    if dry_run:
        for s in todo:
            log(f"would run  {s.cell.label}")
        return LeaderboardResult(cfg, statuses, notes, wall_seconds=time.perf_counter() - t_start)
    if store.dirty:
        store.save()
    if render_only:
        for s in todo:
            s.status = "missing"
    else:
        for s in todo:  # bad input fails before any cell has run
            preflight(ctx, s.cell)
        _run_cells(ctx, store, todo, cfg, log)
    result = LeaderboardResult(cfg, statuses, notes)
    from tasks import leaderboard_render

    result.rows = leaderboard_render.build_rows(result)
    result.wall_seconds = time.perf_counter() - t_start
    result.files = leaderboard_render.render(result, out, command=command)
    for name, path in result.files.items():
        log(f"wrote {path}")
    for s in result.failed:
        log(f"FAILED {s.cell.label}: {s.message}")
    return result


def _run_cells(ctx: Context, store: RecordStore, todo: list[CellStatus], cfg: LeaderboardConfig,
               log: Callable[[str], None]) -> None:
    import shutil

    from tasks.records import read_predictions

    for i, s in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] run  {s.cell.label}")
        t0 = time.perf_counter()
        try:
            shutil.rmtree(ctx.staging(s.key), ignore_errors=True)  # what an interrupted try of this cell left
            record, path = commit(ctx, execute_cell(ctx, s.cell, s.key), s.key, s.cell)
            rows = read_predictions(record["predictions"]) if record.get("predictions") else None
        except (KeyboardInterrupt, SystemExit):
            log(f"interrupted in {s.cell.label}: the records written so far are kept; run again to do the rest")
            raise
        except Exception as e:  # one failing cell does not cost the others
            s.status, s.message, s.seconds = "failed", f"{type(e).__name__}: {e}", time.perf_counter() - t0
            log(f"[{i}/{len(todo)}] FAILED {s.cell.label}: {s.message}")
            continue
        store.add(s.key, path, s.cell)
        s.status, s.record, s.path, s.rows, s.seconds = "ran", record, path, rows, time.perf_counter() - t0
        metrics = " ".join(f"{k}={v:.2f}" for k, v in record["metrics"].items() if v is not None)
        log(f"[{i}/{len(todo)}] done {s.cell.label}: {metrics} ({s.seconds:.1f}s) -> {path}")
        if i == len(todo) or todo[i].cell.task != s.cell.task:
            ctx.forget_task(s.cell.task)


def primary_metric(task: str) -> str:
    return PRIMARY.get(task) or get_task(task).primary_metric


def task_metrics(task: str, record: dict[str, Any]) -> list[str]:
    if task == PERPLEXITY_TASK:
        return ["bits_per_byte", "word_perplexity", "token_perplexity"]
    spec = get_task(task)
    return [m for m in spec.metrics if m in record["metrics"]] + \
        [m for m in record["metrics"] if m not in spec.metrics]
