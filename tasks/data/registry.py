"""Task specs on disk: find, read and check `<name>.yaml` files.

Specs are read from `tasks/specs/` and from every folder named in `GPT2SUITE_TASK_PATH` (colon-separated, as
lm-evaluation-harness' `--include_path`), so a user adds a task with one file and no Python:

    GPT2SUITE_TASK_PATH=my_tasks gpt2suite fewshot --task ag_news --shots 4

A file is checked when it is read: an unknown key fails with a did-you-mean, the task kind checks its own keys
(fields, labels, metrics, baselines), and a named hook must import.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from gpt2core.typed_config import from_dict, read_yaml, unknown_name
from tasks.data.spec import DECODING_DEFAULTS, SplitSource, TaskSpec
from tasks.errors import ConfigError, TaskError
from tasks.evaluation.metrics import METRICS
from tasks.kinds import get_kind

SPEC_DIR = Path(__file__).resolve().parents[1] / "specs"
TASK_PATH_VAR = "GPT2SUITE_TASK_PATH"


def spec_dirs(extra: Sequence[str | os.PathLike] | None = None) -> list[Path]:
    """The folders searched for specs: tasks/specs, then $GPT2SUITE_TASK_PATH, then `extra`."""
    env = [p for p in os.environ.get(TASK_PATH_VAR, "").split(os.pathsep) if p]
    return [SPEC_DIR, *(Path(p) for p in env), *(Path(p) for p in extra or [])]


def available_tasks(extra: Sequence[str | os.PathLike] | None = None) -> dict[str, Path]:
    """Task name -> spec file; a later folder's file of the same name wins (a user may override a task)."""
    found: dict[str, Path] = {}
    for folder in spec_dirs(extra):
        if not folder.is_dir():
            raise TaskError(f"task spec folder {folder} does not exist (check {TASK_PATH_VAR})")
        for f in sorted(folder.glob("*.yaml")):
            found[f.stem] = f
    return found


def get_task(name: str | TaskSpec, extra: Sequence[str | os.PathLike] | None = None) -> TaskSpec:
    """The task called `name` (a spec passes through); an unknown name lists the close matches."""
    if isinstance(name, TaskSpec):
        return name
    tasks = available_tasks(extra)
    if name not in tasks:
        raise TaskError(str(unknown_name("task", name, tasks)).rstrip(".") +
                        f" (spec files in {', '.join(str(d) for d in spec_dirs(extra))})")
    return load_spec(tasks[name])


def load_spec(path: str | os.PathLike) -> TaskSpec:
    """Read and check one spec file (cached while the file is unchanged)."""
    p = Path(path).resolve()
    try:
        mtime = p.stat().st_mtime_ns
    except OSError:
        raise TaskError(f"task spec {p} does not exist") from None
    return _load_spec(str(p), mtime)


@lru_cache(maxsize=256)
def _load_spec(path: str, mtime: int) -> TaskSpec:
    data = dict(read_yaml(path, "task spec"))
    try:
        data["splits"] = {str(k): _split_source(v, f"splits.{k}") for k, v in (data.get("splits") or {}).items()}
        if "version" in data:
            data["version"] = str(data["version"])
        spec = from_dict(TaskSpec, data)
    except ConfigError as e:
        raise TaskError(f"{path}: {e}") from None
    spec.source_file = path
    try:
        check_spec(spec)
    except TaskError as e:
        raise TaskError(f"{path}: {e}") from None
    return spec


def _split_source(value: Any, where: str) -> SplitSource:
    if isinstance(value, str):
        return SplitSource(source=value)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected an upstream split name or {{carve_from: NAME, share: 0.1}}, "
                          f"got {value!r}")
    value = dict(value)
    if "carve_from" not in value:
        raise ConfigError(f"{where}: a carved split needs 'carve_from' (the upstream split) and 'share'")
    value["source"] = value.pop("carve_from")
    try:
        return from_dict(SplitSource, value, where)
    except ConfigError as e:
        raise ConfigError(str(e).replace("'source'", "'carve_from'")) from None


def check_spec(spec: TaskSpec) -> None:
    """The rules every spec follows; the kind then checks its own keys."""
    if not spec.name:
        raise TaskError("the spec has no 'name'")
    if spec.source_file and Path(spec.source_file).stem != spec.name:
        raise TaskError(f"name {spec.name!r} differs from the file name; call the file {spec.name}.yaml")
    kind = get_kind(spec.kind)
    if not spec.data.local and not spec.data.hub:
        raise TaskError("data: give 'local' (a folder of the data mirror) and/or 'hub' (a Hugging Face dataset)")
    if spec.data.format not in ("jsonl", "text"):
        raise TaskError(f"data.format: {spec.data.format!r} is not jsonl or text")
    for role, split in (("eval_split", spec.eval_split), *((("train_split", spec.train_split),)
                                                           if kind.needs_train_split else ())):
        if split not in spec.splits:
            raise TaskError(f"{role} {split!r} is not one of the splits ({', '.join(spec.splits) or 'none'})")
    carved: dict[str, list[SplitSource]] = {}
    for name, src in spec.splits.items():
        if src.share is not None:
            if not 0 < src.share < 1:
                raise TaskError(f"splits.{name}.share must lie strictly between 0 and 1, got {src.share}")
            carved.setdefault(src.source, []).append(src)
    for source, parts in carved.items():
        if sum(p.share for p in parts) > 1 + 1e-9:  # type: ignore[misc]
            raise TaskError(f"splits carved from {source!r} take more than all of it "
                            f"({' + '.join(str(p.share) for p in parts)})")
        if len({p.seed for p in parts}) > 1:
            raise TaskError(f"splits carved from {source!r} must use one seed")
    for m in spec.metrics:
        if m not in METRICS:
            raise TaskError(str(unknown_name("metric", m, METRICS, "metrics")))
        if kind.name not in METRICS[m].kinds:
            raise TaskError(f"metrics: {m!r} does not apply to {kind.name} tasks")
    if not spec.metrics:
        raise TaskError(f"metrics: none given (e.g. {', '.join(kind.default_metrics)})")
    if spec.primary_metric not in spec.metrics:
        raise TaskError(f"primary_metric {spec.primary_metric!r} is not one of metrics ({', '.join(spec.metrics)})")
    for b in spec.baselines:
        if b not in kind.baselines:
            raise TaskError(str(unknown_name(f"{kind.name} baseline", b, kind.baselines, "baselines")))
    if spec.process_row:
        hook(spec)
    kind.validate(spec)


def hook(spec: TaskSpec) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """The spec's `process_row` function: `module.path:function` (importable) or `file.py:function` (a file next
    to the spec, as lm-evaluation-harness' `!function`). It maps one row (the kind's layout) to a row."""
    if not spec.process_row:
        return None
    target, _, func = spec.process_row.partition(":")
    if not func:
        raise TaskError(f"process_row {spec.process_row!r}: write 'module:function' or 'file.py:function'")
    try:
        if target.endswith(".py"):
            path = Path(spec.source_file).parent / target
            mod_spec = importlib.util.spec_from_file_location(f"gpt2suite_hook_{path.stem}", path)
            if mod_spec is None or not path.is_file():
                raise TaskError(f"process_row: {path} does not exist")
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(target)
    except ImportError as e:
        raise TaskError(f"process_row {spec.process_row!r}: cannot import {target!r} ({e})") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise TaskError(f"process_row {spec.process_row!r}: {target} has no function {func!r}")
    return fn


def spec_fields(spec: TaskSpec) -> dict[str, Any]:
    """Everything a spec says (what a cache key hashes), without where it was read from. A decoding setting at its
    default (plain greedy) is left out: it decodes as before the setting existed, so its cells keep their keys."""
    out = dataclasses.asdict(spec)
    out.pop("source_file")
    for key, default in DECODING_DEFAULTS.items():
        if out["generation"][key] == default:
            del out["generation"][key]
    return out
