"""The one typed-config helper: YAML / mappings -> dataclasses, with errors that name the key.

Used by the pretraining, fine-tuning, leaderboard and task-spec configs:

    cfg = from_dict(MyConfig, {"lr": "3e-4", "sizes": [1, 2]}, "my.yaml")   # typed, checked
    data = read_yaml("my.yaml")                                              # a mapping, or ConfigError

An unknown key fails with a did-you-mean; YAML's habit of reading `6e-4` as a string is undone for floats.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

from gpt2core.errors import ConfigError


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is not {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads 6e-4 (no dot) as a string; accept numeric strings.
            if isinstance(value, str):
                try:
                    number = float(value)
                except ValueError:
                    pass
                else:
                    if not math.isfinite(number):
                        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
                    return number
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return str(value)
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """An instance of the dataclass `cls` from a mapping: values are converted to the field types (nested
    dataclasses, lists, tuples, unions, Optional); an unknown key or a wrong type is a `ConfigError` that names
    the key path (`where`) and, for a misspelt key, the closest known one."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"unknown key {path!r}{hint}")
        kwargs[key] = _convert(value, hints[key], path)
    return cls(**kwargs)


def read_yaml(path: str | os.PathLike, what: str = "config") -> dict[str, Any]:
    """The top-level mapping of a YAML file (empty file: {}); a missing file, bad YAML or a non-mapping is a
    `ConfigError` naming the file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of {what} keys at the top level, got {type(data).__name__}")
    return data


def unknown_name(kind: str, name: str, valid: typing.Iterable[str], where: str = "") -> ConfigError:
    """`where: unknown <kind> 'x'. Did you mean 'y'? Valid <kind>s: ...` as a ConfigError."""
    valid = list(valid)
    close = difflib.get_close_matches(str(name), valid, n=2)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    prefix = f"{where}: " if where else ""
    return ConfigError(f"{prefix}unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid)}")
