"""Running one cell: a runner per cell kind, each calling the project's own method pipelines (tasks/methods),
which write a run record + its per-example rows (tasks/evaluation/records.py) into the cell's staging folder.
Every method of a task is scored on the same examples: the first `max_eval_examples` of a fixed (seed-0) shuffle
of the eval split (`tasks.evaluation.predict.eval_rows`).

The method modules are imported inside the runners: they bring torch and transformers with them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.leaderboard.config import BASELINE_MODEL, DUMMY_MODEL, Budgets, LeaderboardConfig, resolve_model_path
from tasks.leaderboard.keys import adapter_overrides, finetune_overrides
from tasks.leaderboard.planning import Cell
from tasks.leaderboard.tasks_api import (LeaderboardError, RecordError, TaskSpec, adapter_meta, finetune_config,
                                         get_task, method_overrides)


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
        from tasks.data.load import load_split

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
        from tasks.models.lm import DummyLM, GPT2LM

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
    from tasks.evaluation.predict import eval_rows

    return eval_rows(spec, spec.eval_split, budgets.eval_limit, ctx.split(spec.name, spec.eval_split)).to_list()


def _model_path(ctx: Context, cell: Cell) -> str:
    """The model as a record names it: `dummy`, or the resolved folder."""
    path = ctx.cfg.models[cell.model].path
    return path if path == DUMMY_MODEL else str(resolve_model_path(path))


def _staged_record(folder: Path) -> Path:
    """The one run record a pipeline that returns a RunRecord (not its path) wrote into a staging folder."""
    found = sorted(folder.glob("*.json"))
    if len(found) != 1:
        raise RecordError(f"expected one run record in the staging folder {folder}, found {len(found)}")
    return found[0]


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
    from tasks.methods.baselines import get_baseline, run_baseline, write_baseline_run

    spec = get_task(cell.task)
    rule = get_baseline(spec, cell.method.baseline)
    train = ctx.split_list(cell.task, spec.train_split) if rule.needs_train else None
    result = run_baseline(spec, rule.name, seed=cell.seed, train_rows=train,
                          eval_rows=_eval_rows(ctx, spec, cell.budgets))
    return write_baseline_run(result, runs_dir=ctx.staging(key))


def _run_fewshot(ctx: Context, cell: Cell, key: str) -> Path:
    from tasks.methods.fewshot import run_fewshot, write_run

    spec = get_task(cell.task)
    _set_threads(cell.budgets)
    lm, n_params = ctx.lm(cell.model, cell.budgets.lm_batch_size or 8)
    train = ctx.split_list(cell.task, spec.train_split) if cell.method.shots else None
    result = run_fewshot(lm, spec, cell.method.shots or 0, seed=cell.seed, calibrate=cell.method.calibrate,
                         train_rows=train, eval_rows=_eval_rows(ctx, spec, cell.budgets))
    return write_run(result, _model_path(ctx, cell), None, runs_dir=ctx.staging(key), total_params=n_params,
                     extra={"runtime": {"batch_size": cell.budgets.lm_batch_size or 8}})


def _run_finetune(ctx: Context, cell: Cell, key: str) -> Path:
    from tasks.methods.extractive import finetune_extractive
    from tasks.methods.finetune import finetune
    from tasks.methods.finetune.run import VALIDATION

    spec = get_task(cell.task)
    method = cell.method.finetune
    cfg = finetune_config(spec, method, finetune_overrides(cell))
    rows = {name: ctx.split(cell.task, name) for name in {spec.train_split, VALIDATION, spec.eval_split}
            if spec.has_split(name)}
    model_path = resolve_model_path(ctx.cfg.models[cell.model].path)
    # The out dir is a function of the cell (its key) only: a re-run of a cell that was interrupted in training
    # resumes from the checkpoints left there (finetune checks that they are of the same config).
    name = cell.method.row_method.removeprefix("finetune:")  # lora, or extractive-lora for the sentence scorer
    out = ctx.models_dir / cell.task / f"{name}-{cell.model}-seed{cell.seed}-{key[:8]}"
    run = finetune_extractive if cell.method.extractive else finetune
    record = run(spec, method, model_path, cfg, out_dir=out, runs_dir=ctx.staging(key), rows=rows)
    if record is None:  # pragma: no cover - only non-main DDP processes get None
        raise RuntimeError("fine-tuning returned no record")
    return _staged_record(ctx.staging(key))


def _run_adapter(ctx: Context, cell: Cell, key: str) -> Path:
    from tasks.methods.evaluate import evaluate
    from tasks.methods.extractive import evaluate_extractive

    spec = get_task(cell.task)
    folder = resolve_model_path(cell.adapter)
    backbone = resolve_model_path(ctx.cfg.models[cell.model].path)
    full = (adapter_meta(folder) or {}).get("method") == "full"
    (evaluate_extractive if cell.method.extractive else evaluate)(
        spec, str(folder if full else backbone), adapter=None if full else str(folder),
        limit=cell.budgets.eval_limit, overrides=method_overrides(cell.method.finetune, adapter_overrides(cell)),
        runs_dir=str(ctx.staging(key)), rows=ctx.split(cell.task, spec.eval_split))
    return _staged_record(ctx.staging(key))


def _run_perplexity(ctx: Context, cell: Cell, key: str) -> Path:
    from tasks.methods.perplexity import evaluate_perplexity, write_perplexity_run

    _set_threads(cell.budgets)
    b = cell.budgets
    lm, n_params = ctx.lm(cell.model, b.lm_batch_size or 8)
    result = evaluate_perplexity(lm, get_task(cell.task), max_len=b.ppl_max_len, stride=b.ppl_stride,
                                 max_chars=b.ppl_max_chars)
    return write_perplexity_run(result, _model_path(ctx, cell), runs_dir=ctx.staging(key), total_params=n_params)


RUNNERS: dict[str, Callable[[Context, Cell, str], Path]] = {
    "baseline": _run_baseline, "fewshot": _run_fewshot, "finetune": _run_finetune, "adapter": _run_adapter,
    "perplexity": _run_perplexity,
}
