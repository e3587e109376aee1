"""Every question the leaderboard asks the task layer, in one place (the cell runners in runners.py call the task
modules themselves). When the task API changes, this file and runners.py are what change.

Heavy modules (torch through tasks.adapters, tasks.finetune) are imported inside the functions that need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks import bootstrap
from tasks.bootstrap import LOWER_IS_BETTER, Run
from tasks.records import (RecordError, atomic_write_text, config_hash, model_config_hash, read_predictions,
                           read_record, repo_relative, write_record)
from tasks.registry import REPO_ROOT, TASKS, TaskSpec, get_task

__all__ = ["LOWER_IS_BETTER", "PERPLEXITY_TASK", "REPO_ROOT", "RecordError", "Run", "TaskSpec", "adapter_meta",
           "applicable_finetune_methods", "atomic_write_text", "baseline_choices", "bootstrap", "check_rows",
           "config_hash", "finetune_config", "finetune_method_names", "get_task", "is_classification",
           "model_config_hash", "primary_metric", "read_predictions", "read_record", "registry_tasks",
           "repo_relative", "task_fields", "task_metrics", "valid_tasks", "write_record"]

PERPLEXITY_TASK = "wikitext2"  # not a registry task: the perplexity row
PRIMARY = {PERPLEXITY_TASK: "bits_per_byte"}


def registry_tasks() -> list[str]:
    return list(TASKS)


def valid_tasks() -> list[str]:
    return [*TASKS, PERPLEXITY_TASK]


def primary_metric(task: str) -> str:
    return PRIMARY.get(task) or get_task(task).primary_metric


def task_metrics(task: str, record: dict[str, Any]) -> list[str]:
    if task == PERPLEXITY_TASK:
        return ["bits_per_byte", "word_perplexity", "token_perplexity"]
    spec = get_task(task)
    return [m for m in spec.metrics if m in record["metrics"]] + \
        [m for m in record["metrics"] if m not in spec.metrics]


def is_classification(spec: TaskSpec) -> bool:
    return spec.kind == "classification"


def task_fields(spec: TaskSpec) -> dict[str, Any]:
    """What of a task changes a result (not `to_row`, a function)."""
    return {k: getattr(spec, k) for k in ("name", "kind", "version", "local_dir", "train_split", "eval_split",
                                          "label_names", "metrics", "primary_metric", "separator", "prompt",
                                          "derived_splits", "max_target_tokens")}


def baseline_choices(spec: TaskSpec) -> tuple[str, list[str]]:
    """(the task's baseline family, the tasks/baselines.py methods of that family)."""
    from tasks.baselines import METHODS, baseline_family

    family = baseline_family(spec)
    return family, list(METHODS[family])


def finetune_method_names() -> tuple[str, ...]:
    from tasks.adapters import METHODS

    return METHODS


def applicable_finetune_methods(spec: TaskSpec) -> tuple[str, ...]:
    from tasks.adapters import applicable_methods

    return applicable_methods(spec)


def adapter_meta(folder: str | Path) -> dict[str, Any] | None:
    """The gpt2suite.json that `gpt2suite finetune` writes beside a trained model (task, method), or None."""
    from tasks.adapters import read_meta

    return read_meta(folder)


def finetune_config(spec: TaskSpec, method: str, overrides: dict[str, Any]) -> Any:
    """The resolved FinetuneConfig of a fine-tuning cell."""
    from tasks.finetune import load_finetune_config

    return load_finetune_config(spec, method, overrides=overrides)


def check_rows(record: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The predictions rows can be resampled: one per example, with an id, a prediction, references and the
    primary metric's per-example score. Raises RecordError."""
    where = f"predictions {record['predictions']}"
    if len(rows) != record["n_examples"]:
        raise RecordError(f"{where} have {len(rows)} rows, not the record's {record['n_examples']}")
    try:
        run = Run.from_rows(rows)
    except (KeyError, TypeError, ValueError) as e:
        raise RecordError(f"{where} are not per-example predictions ({type(e).__name__}: {e})") from None
    spec, metric = get_task(record["task"]), primary_metric(record["task"])
    if bootstrap.is_mean_metric(spec, metric) and any(metric not in s for s in run.scores):
        raise RecordError(f"{where} lack the per-example {metric!r} score")
