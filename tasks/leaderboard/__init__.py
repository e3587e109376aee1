"""The leaderboard: run every (model, task, method, seed) cell a config lists, reusing run records, then render.

    gpt2suite leaderboard --config configs/leaderboard/quick.yaml [--out results] [--dry-run]

A config (configs/leaderboard/*.yaml) names models (name -> backbone folder, optionally with already trained
adapters per task), tasks (any task spec of tasks/specs), methods, seeds and budgets:

    models: {default: results/backbones/default}
    tasks: [<classification task>, <QA task>, <language-modelling task>]
    methods: [baseline:majority, zero-shot, few-shot:4, {name: finetune:lora, seeds: [0, 1]}]
    seeds: [0]
    budgets: {max_eval_examples: 200, epochs: 1, threads: 1}
    task_budgets: {<QA task>: {max_eval_examples: 100}}

Methods: `baseline:<name>` (tasks/methods/baselines.py: the names the specs and `gpt2suite baseline` use),
`zero-shot`, `few-shot:K`, `few-shot-calibrated:K` (tasks/methods/fewshot.py),
`finetune:<full|linear|lora|prompt|prefix>` (tasks/methods/finetune). What applies to a task is asked of its spec
and kind: a baseline applies when the spec lists it under `baselines:`, prompting and calibration when the kind
prompts / ranks labels, a fine-tuning method when the kind lists it; a method that does not apply (or fine-tuning
the `dummy` model) is skipped with a note. A task whose kind scores whole texts (language modelling) gets the
perplexity row instead. Budgets layer: `budgets` < `task_budgets[task]` < a method entry's `budgets`.

Every method of a task is scored on the same examples: the first `max_eval_examples` of a fixed (seed-0) shuffle
of the task's eval split (`tasks.evaluation.predict.eval_rows`), so rows can be compared pairwise, example by
example. Seeds: few-shot demos and fine-tuning depend on the seed; the other cells (baselines, which train on the
whole train split, zero-shot, perplexity, trained adapters) are deterministic and run once, with the first seed.

Cache: a cell's key is a hash of everything that affects its result (keys.py: the whole task spec, the method,
shots, seed, model path + config hash + a hash of its weight files, the budgets that apply, only the cell's
fine-tuning method's fields of the resolved fine-tuning config, `CELL_FORMAT`). A cell's runner writes its
record + predictions (tasks/evaluation/records.py) into a staging folder; the commit step stamps the record with
the key under `leaderboard` and writes both into `<out>/runs` with the one run writer, as
`<records.record_name>__lb<key>.json` (and `.predictions.jsonl`; the record last, atomically): cells never share
a file and records of the other commands are never replaced. `<out>/runs/index.json` maps keys to records; a key
missing from it (or an unreadable index) makes a scan of the folder for stamped records (records of an older
format are reported and never reused). Fine-tuned models go to `--models-dir` (default
runs/leaderboard/<task>/<method>-<model>-seed<seed>-<key>). A cached record that cannot be read (or whose
predictions cannot) is reported and its cell re-run; nothing else is deleted. A cell that fails is reported and
the others go on (exit status 1); an interrupted run keeps every record completed so far and the next run does
the rest.

The modules, each importing only those above it (errors are tasks.errors.LeaderboardError):

    tasks_api.py  the task layer as the leaderboard sees it (specs, kinds, metrics, records, bootstrap, fine-tuning
                  config): a thin adapter
    methods.py    MethodSpec, parse_method, the did-you-mean message
    config.py     Budgets, ModelEntry, MethodEntry, LeaderboardConfig: loading and validation
    planning.py   Cell, Note, plan
    keys.py       cell keys, folder fingerprints, model identity
    store.py      RecordStore (index.json), Cached
    result.py     CellStatus, LeaderboardResult: what the renderer reads
    runners.py    Context and the per-kind cell runners (the method pipelines)
    render/       rows (statistics), tables (CSV, Markdown), plots, page (HTML from page.html)
    run.py        run_leaderboard: plan, look up, run, commit, render
    cli.py        `gpt2suite leaderboard`

Names are imported on first use, so that `gpt2suite --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LeaderboardError": "tasks.errors",
    "MethodSpec": "tasks.leaderboard.methods",
    "parse_method": "tasks.leaderboard.methods",
    "Budgets": "tasks.leaderboard.config",
    "LeaderboardConfig": "tasks.leaderboard.config",
    "MethodEntry": "tasks.leaderboard.config",
    "ModelEntry": "tasks.leaderboard.config",
    "config_from_dict": "tasks.leaderboard.config",
    "load_config": "tasks.leaderboard.config",
    "Cell": "tasks.leaderboard.planning",
    "Note": "tasks.leaderboard.planning",
    "plan": "tasks.leaderboard.planning",
    "cell_key": "tasks.leaderboard.keys",
    "CellStatus": "tasks.leaderboard.result",
    "LeaderboardResult": "tasks.leaderboard.result",
    "run_leaderboard": "tasks.leaderboard.run",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tasks.leaderboard' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
