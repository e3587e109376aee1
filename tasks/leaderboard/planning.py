"""Planning: the cells a config asks for, in run order, and a note on each method that does not apply.

What applies is asked of the task's spec and kind: a baseline applies when the spec lists it, prompting and
calibration when the kind prompts / ranks labels, a fine-tuning method when the kind lists it (the extractive
ones, `finetune:extractive-*`, when `tasks.methods.extractive.applies`: summarization tasks); fine-tuning the
`dummy` model never applies. A trained adapter listed under a model takes the place of the cell of its method
and formulation (an extractive scorer's `gpt2suite.json` says `extra.formulation: extractive`). Whatever does not is skipped with a note. A task whose kind scores whole texts
(`scores_text`) gets one perplexity row per model instead of the config's methods. Few-shot demos and fine-tuning
depend on the seed; the other cells (baselines, zero-shot, perplexity, trained adapters) run once, with the first
seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.leaderboard.config import BASELINE_MODEL, DUMMY_MODEL, Budgets, LeaderboardConfig, resolve_model_path
from tasks.leaderboard.methods import EXTRACTIVE, MethodSpec, parse_method, unknown
from tasks.leaderboard.tasks_api import LeaderboardError, TaskSpec, adapter_meta, get_task, task_kind
from tasks.methods.extractive import applies as extractive_applies

PERPLEXITY = MethodSpec("perplexity", "perplexity", "language-modelling", shots=0)  # the row of a text-scoring task
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
    for t in only_tasks or []:
        if t not in cfg.tasks:
            raise unknown("task", t, cfg.tasks, f"--task (tasks of {cfg.source})")
    for m in only_models or []:
        if m not in cfg.models:
            raise unknown("model", m, list(cfg.models), f"--model (models of {cfg.source})")
    config_methods = list(dict.fromkeys(m.name for m in cfg.methods))
    for m in only_methods or []:
        if m not in config_methods:
            raise unknown("method", m, config_methods, f"--method (methods of {cfg.source})")
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
        spec = get_task(task_name)
        kind = task_kind(spec)
        if kind.scores_text:
            if only_methods:
                continue  # perplexity is not one of the config's methods: it runs when no method is picked
            for model in models:
                add(Cell(model, task_name, PERPLEXITY, cfg.seeds[0], task_layer, "perplexity"))
            continue
        for entry in cfg.methods:
            if (entry.tasks is not None and task_name not in entry.tasks) or \
                    (only_methods and entry.name not in only_methods):
                continue
            method = parse_method(entry.name)
            budgets = task_layer.merged(entry.budgets)
            seeds = entry.seeds or cfg.seeds
            why = _not_applicable(spec, method)
            if why:
                notes.append(Note(f"{task_name} | {method.name}", f"{why}; skipped"))
                continue
            if method.kind == "baseline":
                add(Cell(BASELINE_MODEL, task_name, method, seeds[0], budgets, "baseline"))
                continue
            for model in models:
                entry_m = cfg.models[model]
                if method.kind == "finetune":
                    adapter = entry_m.adapters.get(task_name)
                    if adapter is not None and _adapter_method(adapter, task_name, model) == _trained_name(method):
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
                spec_m = MethodSpec(f"finetune:{m}", "adapter", f"finetune:{m}", finetune=m.removeprefix(EXTRACTIVE),
                                    extractive=m.startswith(EXTRACTIVE))
                add(Cell(model, task_name, spec_m, cfg.seeds[0], task_layer, "adapter", adapter=adapter))
    return cells, notes


def _not_applicable(spec: TaskSpec, method: MethodSpec) -> str | None:
    """Why `method` does not apply to the task (asked of its spec and kind), or None when it does."""
    kind = task_kind(spec)
    if method.kind == "baseline":
        if method.baseline not in spec.baselines:
            listed = ", ".join(spec.baselines) or "none"
            return f"does not apply to {spec.name} (the baselines its spec lists: {listed})"
    elif method.kind == "fewshot" and not kind.prompting:
        return f"prompting does not apply to {spec.name} ({kind.name} tasks)"
    elif method.calibrate and not kind.calibrates:
        return f"calibration applies to kinds that rank labels; {spec.name} is a {kind.name} task"
    elif method.kind == "finetune" and method.extractive:
        return extractive_applies(spec)
    elif method.kind == "finetune" and method.finetune not in kind.finetune_methods:
        return (f"does not apply to {spec.name} ({kind.name} tasks: "
                f"{', '.join(kind.finetune_methods) or 'no fine-tuning'})")
    return None


def _trained_name(method: MethodSpec) -> str:
    """The name `_adapter_method` gives a folder trained by `method`: lora, extractive-lora, ..."""
    return (EXTRACTIVE if method.extractive else "") + str(method.finetune)


def _adapter_method(adapter: str, task: str, model: str) -> str:
    """The method a trained folder was fine-tuned with, `extractive-` before it for a sentence scorer."""
    folder = resolve_model_path(adapter)
    meta = adapter_meta(folder)
    if meta is None:
        raise LeaderboardError(f"models.{model}.adapters.{task}: {folder} holds no gpt2suite.json; give a folder "
                               "written by `gpt2suite finetune` (its <out>/model)")
    if meta.get("task") != task:
        raise LeaderboardError(f"models.{model}.adapters.{task}: {folder} was trained for task {meta.get('task')!r}")
    extractive = (meta.get("extra") or {}).get("formulation") == "extractive"
    return (EXTRACTIVE if extractive else "") + str(meta["method"])
