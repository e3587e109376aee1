"""The task layer as the leaderboard sees it: a thin adapter over tasks.data (specs), tasks.kinds (what applies to
a task), tasks.evaluation (metrics, records, bootstrap) and the fine-tuning config. Every question is answered by
those modules; this file only gives the answers the names the leaderboard uses. The cell runners (runners.py)
call the method pipelines (tasks.methods) themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpt2core.io import atomic_write_text
from gpt2core.paths import REPO_ROOT
from tasks.data.registry import available_tasks, get_task, spec_fields
from tasks.data.spec import TaskSpec
from tasks.errors import LeaderboardError, RecordError, TaskError
from tasks.evaluation import bootstrap
from tasks.evaluation.bootstrap import Run
from tasks.evaluation.metrics import METRICS, higher_is_better
from tasks.evaluation.records import (RECORD_FORMAT, RunRecord, config_hash, model_config_hash, predictions_beside,
                                      read_predictions, read_record, repo_relative, write_run)
from tasks.kinds import TaskKind, get_kind
from tasks.kinds.base import FINETUNE_METHODS
from tasks.methods.baselines import BASELINES
from tasks.methods.finetune.config import METHOD_SETTINGS, load_finetune_config, method_fields, settings_keys

__all__ = ["BASELINES", "FINETUNE_METHODS", "LeaderboardError", "RECORD_FORMAT", "RecordError", "REPO_ROOT", "Run",
           "RunRecord", "TaskError", "TaskSpec", "adapter_eval_fields", "adapter_meta", "atomic_write_text",
           "bootstrap", "check_rows", "config_hash", "finetune_config", "finetune_fields", "get_task",
           "higher_is_better", "method_overrides", "metric_label", "model_config_hash", "predictions_beside",
           "primary_metric", "read_predictions", "read_record", "repo_relative", "scores_text", "spec_fields", "task_kind",
           "task_metrics", "valid_tasks", "write_run"]


def valid_tasks() -> list[str]:
    """Every task with a spec file (tasks/specs and $GPT2SUITE_TASK_PATH)."""
    return list(available_tasks())


def task_kind(task: str | TaskSpec) -> TaskKind:
    return get_kind(get_task(task).kind)


def scores_text(task: str | TaskSpec) -> bool:
    """Whether the task is scored as a whole text (its row is the perplexity row), not example by example."""
    return task_kind(task).scores_text


def primary_metric(task: str) -> str:
    return get_task(task).primary_metric


def metric_label(metric: str) -> str:
    return METRICS[metric].display if metric in METRICS else metric


def task_metrics(task: str, record: RunRecord) -> list[str]:
    """The record's metrics in the spec's order (any others after them)."""
    spec = get_task(task)
    return [m for m in spec.metrics if m in record.metrics] + [m for m in record.metrics if m not in spec.metrics]


def method_overrides(method: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` less the settings of other fine-tuning methods: a budget layer serves every method, and `r`
    (LoRA's) does not apply to a prefix-tuning cell."""
    others = {k for m in METHOD_SETTINGS if m != method for k in settings_keys(m)} - set(settings_keys(method))
    return {k: v for k, v in overrides.items() if k not in others}


def finetune_config(spec: TaskSpec, method: str, overrides: dict[str, Any]) -> Any:
    """The resolved FinetuneConfig of a `method` cell (configs/finetune layers, then `method_overrides`)."""
    return load_finetune_config(spec, method, overrides=method_overrides(method, overrides))


def finetune_fields(cfg: Any, method: str) -> dict[str, Any]:
    """What defines a fine-tuning result: the common fields and only `method`'s settings block."""
    return method_fields(cfg, method)


def adapter_eval_fields(cfg: Any, method: str) -> dict[str, Any]:
    """What defines the evaluation of a trained adapter: the common fields only (as its record says); the
    adapter's own settings are in its folder, hashed with its weights."""
    return {k: v for k, v in method_fields(cfg, method).items() if k not in METHOD_SETTINGS}


def adapter_meta(folder: str | Path) -> dict[str, Any] | None:
    """The gpt2suite.json that `gpt2suite finetune` writes beside a trained model (task, method), or None."""
    from tasks.methods.adapters import read_meta

    return read_meta(folder)


def check_rows(record: RunRecord, rows: list[dict[str, Any]]) -> None:
    """The predictions rows can be resampled: one per example, each with an id, a prediction, references and a
    nested `scores` mapping that holds the primary metric when it is a mean of examples. Raises RecordError."""
    where = f"predictions {record.predictions}"
    if len(rows) != record.n_examples:
        raise RecordError(f"{where} have {len(rows)} rows, not the record's {record.n_examples}")
    try:
        run = Run.from_rows(rows)
    except (KeyError, TypeError, ValueError) as e:
        raise RecordError(f"{where} are not per-example predictions ({type(e).__name__}: {e})") from None
    spec = get_task(record.task)
    metric = spec.primary_metric
    if bootstrap.is_mean_metric(spec, metric) and any(metric not in s for s in run.scores):
        raise RecordError(f"{where} lack the per-example {metric!r} score")
