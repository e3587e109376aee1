"""The whole run: plan, look every cell up in the record store, run what is missing, commit each record, render.

A cell's runner writes its record + predictions into a staging folder; `commit` stamps the record with the key
under `leaderboard` and writes both into `<out>/runs` with the one run writer (`records.write_run`: predictions
first, the record last, each atomically) as `<records.record_name>__lb<key>.json` (and `.predictions.jsonl`):
cells never share a file and records of the other commands are never replaced. A cell
that fails is reported and the others go on; an interrupted run keeps every record completed so far and the next
run does the rest.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.evaluation.memory import RULE as MEMORY_RULE
from tasks.evaluation.memory import CellMemory
from tasks.leaderboard.config import LeaderboardConfig, load_config
from tasks.leaderboard.keys import EVAL_SUBSET, cell_key
from tasks.leaderboard.planning import Cell, plan
from tasks.leaderboard.render import render
from tasks.leaderboard.render.rows import build_rows
from tasks.leaderboard.result import CellStatus, LeaderboardResult
from tasks.leaderboard.runners import Context, execute_cell, preflight
from tasks.leaderboard.store import RecordStore
from tasks.leaderboard.tasks_api import REPO_ROOT, RunRecord, read_predictions, read_record, write_run

# Ad-hoc and main-job outputs go to the ignored runs/ folder; the committed results/ is written only when asked
# for (`--out results`), so running the README's commands never rewrites published files.
DEFAULT_OUT = REPO_ROOT / "runs" / "leaderboard"
DEFAULT_MODELS_DIR = REPO_ROOT / "runs" / "leaderboard" / "models"


def commit(ctx: Context, staged: Path, key: str, cell: Cell,
           peak_mb: float | None = None) -> tuple[RunRecord, Path, list[dict[str, Any]] | None]:
    """Write a runner's record + predictions from the cell's staging folder into the run folder with the one
    writer, as `<records.record_name minus .json>__lb<key>` (two cells never share a file, and records written by
    the other commands are never replaced), the record stamped with the cell key under `leaderboard`. The record
    is written last, atomically, so a record always has its predictions. Returns (record, its path, its rows)."""
    record = read_record(staged)
    rows = read_predictions(record.predictions) if record.predictions else None
    if peak_mb is not None:  # the cell's own peak, not the whole process' (which holds earlier cells' too)
        record.peak_memory_mb = peak_mb
        record.details["memory"] = {"peak_memory_mb": peak_mb, "rule": MEMORY_RULE}
    record.leaderboard = {"cell_key": key, "cell": cell.describe(), "config": ctx.cfg.source,
                          "eval_subset": EVAL_SUBSET if cell.kind != "perplexity" else None,
                          "budgets": dataclasses.asdict(cell.budgets)}
    path = write_run(record, rows, ctx.runs_dir, name=f"{staged.stem}__lb{key[:10]}")
    shutil.rmtree(ctx.staging(key), ignore_errors=True)
    try:
        ctx.staging(key).parent.rmdir()  # only when no other cell's staging folder is left
    except OSError:
        pass
    return record, path, rows


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
    if notes:
        pairs = "; ".join(f"{n.cell}" for n in notes[:3]) + ("; ..." if len(notes) > 3 else "")
        log(f"skip  {len(notes)} method/task pairs that do not apply ({pairs}; the page lists why)")
    store = RecordStore(runs_dir, log)
    ctx = Context(cfg, runs_dir, Path(models_dir) if models_dir else DEFAULT_MODELS_DIR)

    statuses = _lookup(cfg, cells, store, log, warn=True, rerun=not (dry_run or render_only))
    todo = [s for s in statuses if s.status == "planned"]
    log(f"{cfg.source}: {len(cells)} cells: {len(cells) - len(todo)} cached, {len(todo)} to run, "
        f"{len(notes)} skipped")
    if dry_run:
        for s in statuses:
            log(f"{'cached' if s.status == 'cached' else 'would run':9}  {s.cell.label}")
        for n in notes:
            log(f"{'skip':9}  {n.cell}: {n.message}")
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
    if only_tasks or only_models or only_methods:
        # A slice never replaces the whole table with its own rows: render the whole config from every cached
        # record, the slice's included; cells that have not run yet show as missing.
        done = {s.key: s for s in statuses}
        cells, notes = plan(cfg)
        statuses = [done.get(st.key, st) for st in _lookup(cfg, cells, store, log, warn=False, rerun=False)]
        for st in statuses:
            if st.status == "planned":
                st.status = "missing"
        log(f"rendering the whole config: {len(statuses)} cells, {sum(st.status == 'missing' for st in statuses)} "
            "not run yet")
    result = LeaderboardResult(cfg, statuses, notes)
    result.rows = build_rows(result)
    result.wall_seconds = time.perf_counter() - t_start
    result.files = render(result, out, command=command)
    for name, path in result.files.items():
        log(f"wrote {path}")
    for s in result.failed:
        log(f"FAILED {s.cell.label}: {s.message}")
    return result


def _lookup(cfg: LeaderboardConfig, cells: list[Cell], store: RecordStore, log: Callable[[str], None], warn: bool,
            rerun: bool) -> list[CellStatus]:
    """Each cell's cached record, or a `planned` status (with why a cached record could not be used)."""
    statuses: list[CellStatus] = []
    for cell in cells:
        key, _ = cell_key(cfg, cell)
        cached, problem = store.lookup(key)
        if cached is not None:
            statuses.append(CellStatus(cell, key, "cached", cached.record, cached.path, cached.rows))
            continue
        if problem and warn:
            log(f"warning: the cached record of {cell.label} cannot be used: {problem}; "
                + ("it will be re-run" if rerun else "re-run it"))
        statuses.append(CellStatus(cell, key, "planned", message=problem))
    return statuses


def _run_cells(ctx: Context, store: RecordStore, todo: list[CellStatus], cfg: LeaderboardConfig,
               log: Callable[[str], None]) -> None:
    for i, s in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] run  {s.cell.label}")
        t0 = time.perf_counter()
        try:
            shutil.rmtree(ctx.staging(s.key), ignore_errors=True)  # what an interrupted try of this cell left
            with CellMemory() as memory:
                staged = execute_cell(ctx, s.cell, s.key)
            record, path, rows = commit(ctx, staged, s.key, s.cell, memory.peak_mb)
        except (KeyboardInterrupt, SystemExit):
            log(f"interrupted in {s.cell.label}: the records written so far are kept; run again to do the rest")
            raise
        except Exception as e:  # one failing cell does not cost the others
            s.status, s.message, s.seconds = "failed", f"{type(e).__name__}: {e}", time.perf_counter() - t0
            log(f"[{i}/{len(todo)}] FAILED {s.cell.label}: {s.message}")
            continue
        store.add(s.key, path, s.cell)
        s.status, s.record, s.path, s.rows, s.seconds = "ran", record, path, rows, time.perf_counter() - t0
        metrics = " ".join(f"{k}={v:.2f}" for k, v in record.metrics.items() if v is not None)
        log(f"[{i}/{len(todo)}] done {s.cell.label}: {metrics} ({s.seconds:.1f}s) -> {path}")
        if i == len(todo) or todo[i].cell.task != s.cell.task:
            ctx.forget_task(s.cell.task)
