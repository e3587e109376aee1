"""The fine-tuning config: common fields (optimisation, inputs, budgets) and one settings block per PEFT method.

    cfg = load_finetune_config("<task>", "lora", overrides={"epochs": 1, "max_train_examples": 2000})
    cfg.lr, cfg.lora.r, method_fields(cfg, "lora")

Layers, later ones winning: the dataclass defaults < configs/finetune/defaults.yaml < the task's file
(configs/finetune/<task>.yaml, or `--config`) < overrides (CLI flags, `--set`). A YAML file holds common keys at
the top level and per-method keys under `methods:`; a method's block takes common keys (its own `lr`) and that
method's settings, written flat:

    lr: 1.0e-4
    methods:
      lora: {lr: 2.0e-3, r: 8, alpha: 16, dropout: 0.05, targets: [c_attn, c_proj, c_fc]}
      prefix: {lr: 3.0e-2, num_virtual_tokens: 20}

Overrides are flat too: a common key, or a settings key of the run's method (`--set r=4` on a LoRA run). A
settings key of another method, an unknown key or a wrong type is a `ConfigError` that names the key and the
file. `method_fields(cfg, method)` is what defines a run's result: the common fields and only that method's block.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt2core.paths import REPO_ROOT
from gpt2core.typed_config import from_dict, read_yaml, unknown_name
from tasks.data.registry import get_task
from tasks.data.spec import TaskSpec
from tasks.errors import ConfigError
from tasks.kinds import get_kind
from tasks.kinds.base import FINETUNE_METHODS, PredictSettings

CONFIG_DIR = REPO_ROOT / "configs" / "finetune"


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["c_attn"])  # defaults.yaml: every linear layer


@dataclass
class PromptSettings:
    num_virtual_tokens: int = 20


@dataclass
class PrefixSettings:
    num_virtual_tokens: int = 20
    prefix_projection: bool = False


# Method -> its settings block (a FinetuneConfig field of the same name); full and linear have none.
METHOD_SETTINGS: dict[str, type] = {"lora": LoraSettings, "prompt": PromptSettings, "prefix": PrefixSettings}


@dataclass
class FinetuneConfig:
    # optimisation
    lr: float = 5e-5
    weight_decay: float = 0.0
    batch_size: int = 16  # per device
    grad_accum: int = 1
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    warmup: float = 0.06  # < 1: fraction of the optimizer steps; >= 1: steps
    lr_scheduler: str = "linear"
    max_grad_norm: float = 1.0
    bf16: bool | None = None  # None: when the device supports it
    # inputs
    max_length: int = 256  # tokens per input; capped at the model's n_positions
    doc_stride: int = 128  # QA windows overlap
    max_answer_length: int = 30  # QA, tokens
    n_best: int = 20  # QA
    keep_source: str = "start"  # generation: which part of a long source survives truncation ("start" | "end")
    max_target_tokens: int | None = None  # generation: training targets / generated tokens (default: the task's)
    num_beams: int | None = None  # generation at evaluation: None = the task spec's generation.num_beams
    # evaluation and budgets
    eval_batch_size: int = 32
    eval_steps: int | None = None  # None: evaluate (and checkpoint) once per epoch
    # at most this many validation examples (a seeded subset) are scored at each evaluation; a small run scores
    # fewer (`sized_val_examples`: half its training examples, at least 16)
    val_examples: int = 500
    early_stopping_patience: int = 3  # evaluations without improvement of the primary metric (epochs: at most)
    # where the validation rows scored in training come from: None (auto) = held out of the training split when the
    # reported split is `validation` (early stopping must not see it), else the `validation` split; true / false
    # force one (false with split validation selects on the reported rows: only for deliberate overfitting tests)
    val_from_train: bool | None = None
    max_train_examples: int | None = None  # seeded subset of the training split
    max_eval_examples: int | None = None  # first N of a fixed shuffle of the reported split
    logging_steps: int = 10
    seed: int = 0  # the leaderboard's default seed too
    progress: bool = True
    threads: int | None = None  # torch CPU threads (None: torch's choice; 1 is far faster on a busy machine)
    group_by_length: bool = True  # batches of similar lengths (less padding), in a seeded order
    checkpoint_minutes: float = 10.0  # a resumable checkpoint at least this often (and at every evaluation)
    resume: bool = True  # continue from the out dir's last checkpoint of the same config
    # per-method settings (only the run's method's block applies)
    lora: LoraSettings = field(default_factory=LoraSettings)
    prompt: PromptSettings = field(default_factory=PromptSettings)
    prefix: PrefixSettings = field(default_factory=PrefixSettings)


COMMON_FIELDS = tuple(f.name for f in dataclasses.fields(FinetuneConfig) if f.name not in METHOD_SETTINGS)
# common fields that do not change a run's result
NOT_RESULTS = ("progress", "threads", "logging_steps", "checkpoint_minutes", "resume")
# The flat keys of a method block must not shadow a common key.
assert not {f.name for s in METHOD_SETTINGS.values() for f in dataclasses.fields(s)} & set(COMMON_FIELDS)
# Keys of the old flat layout: say where they went instead of only "unknown key".
_MOVED = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "lora_targets": "targets"}


def settings_keys(method: str) -> tuple[str, ...]:
    cls = METHOD_SETTINGS.get(method)
    return tuple(f.name for f in dataclasses.fields(cls)) if cls else ()


def method_fields(cfg: FinetuneConfig, method: str) -> dict[str, Any]:
    """What defines the result of a `method` run: the common fields (less `NOT_RESULTS`) and only that method's
    settings block, as `{..., "<method>": {...}}`. The leaderboard's cache key hashes exactly this."""
    out = {k: getattr(cfg, k) for k in COMMON_FIELDS if k not in NOT_RESULTS}
    if method in METHOD_SETTINGS:
        out[method] = dataclasses.asdict(getattr(cfg, method))
    return out


def _split_layer(data: dict[str, Any], source: str, block: str | None,
                 prefix: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """(common keys, settings keys) of one layer. `block`: the method whose settings may appear (None: a file's
    top level, where none may); `prefix`: how error messages name the layer's keys (`methods.<method>`)."""
    own = settings_keys(block) if block else ()
    common, settings = {}, {}
    for key, value in data.items():
        if key in COMMON_FIELDS:
            common[key] = value
        elif key in own:
            settings[key] = value
        else:
            path = f"{prefix}.{key}" if prefix else str(key)
            if key in _MOVED:
                raise ConfigError(f"{source}: unknown key {path!r}; LoRA's settings are now methods.lora."
                                  f"{_MOVED[key]} (and only apply to LoRA runs)")
            if key in METHOD_SETTINGS:
                raise ConfigError(f"{source}: {path!r}: a method's settings go under methods.{key}, written flat")
            owners = [m for m in METHOD_SETTINGS if key in settings_keys(m)]
            if owners:
                not_here = f"not a {block} one" if block else f"write it under methods.{owners[0]}"
                raise ConfigError(f"{source}: {path!r} is a {' / '.join(owners)} setting, {not_here}")
            raise ConfigError(f"{source}: {unknown_name('key', str(key), [*COMMON_FIELDS, *own], prefix)}")
    try:
        from_dict(FinetuneConfig, common, prefix)
        if block in METHOD_SETTINGS:
            from_dict(METHOD_SETTINGS[block], settings, prefix)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return common, settings


def read_layer(path: str | os.PathLike) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """A config file checked: {"": (common, {}), "<method>": (its common keys, its settings), ...}."""
    data = dict(read_yaml(path, "fine-tuning config"))
    source = str(path)
    methods = data.pop("methods", None) or {}
    if not isinstance(methods, dict):
        raise ConfigError(f"{source}: 'methods' must map method names to config keys")
    layer = {"": _split_layer(data, source, None)}
    for name, block in methods.items():
        if name not in FINETUNE_METHODS:
            raise ConfigError(f"{source}: {unknown_name('method', str(name), FINETUNE_METHODS, 'methods')}")
        if block is not None and not isinstance(block, dict):
            raise ConfigError(f"{source}: methods.{name} must be a mapping of config keys")
        layer[name] = _split_layer(block or {}, source, name, f"methods.{name}")
    return layer


def load_finetune_config(
    task: str | TaskSpec,
    method: str,
    config_path: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    config_dir: str | os.PathLike = CONFIG_DIR,
) -> FinetuneConfig:
    """The resolved config for `task` and `method` (see the module docstring for the layers)."""
    spec = get_task(task)
    get_kind(spec.kind).check_method(spec, method)
    config_dir = Path(config_dir)
    files = [config_dir / "defaults.yaml"]
    if config_path is not None:
        if not Path(config_path).is_file():
            raise ConfigError(f"fine-tuning config {config_path} does not exist (see {config_dir}/*.yaml)")
        files.append(Path(config_path))
    else:
        files.append(config_dir / f"{spec.name}.yaml")
    common: dict[str, Any] = {}
    blocks: dict[str, dict[str, Any]] = {m: {} for m in METHOD_SETTINGS}
    for path in files:
        if path.is_file():
            layer = read_layer(path)
            common.update(layer[""][0])
            common.update(layer.get(method, ({}, {}))[0])
            for name, (_, settings) in layer.items():
                if name in blocks:  # every block is resolved; only the run's method's block is used
                    blocks[name].update(settings)
    over_common, over_settings = _split_layer(dict(overrides or {}), "overrides", method)
    common.update(over_common)
    if method in blocks:
        blocks[method].update(over_settings)
    cfg = from_dict(FinetuneConfig, {**common, **blocks})
    validate(cfg, method)
    return cfg


def validate(cfg: FinetuneConfig, method: str) -> None:
    """Values in range (the types were checked when the layers were read)."""
    for name in ("batch_size", "grad_accum", "eval_batch_size", "max_length", "val_examples", "logging_steps",
                 "n_best", "max_answer_length"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}: must be at least 1, got {getattr(cfg, name)}")
    for name in ("max_train_examples", "max_eval_examples", "eval_steps", "max_target_tokens", "threads",
                 "num_beams"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise ConfigError(f"{name}: must be at least 1 (or null), got {getattr(cfg, name)}")
    if cfg.checkpoint_minutes <= 0:
        raise ConfigError(f"checkpoint_minutes: must be positive, got {cfg.checkpoint_minutes}")
    if cfg.lr <= 0 or cfg.epochs <= 0 or cfg.warmup < 0:
        raise ConfigError("lr and epochs must be positive and warmup not negative")
    if cfg.keep_source not in ("start", "end"):
        raise ConfigError(f"keep_source: {cfg.keep_source!r} is not 'start' or 'end'")
    block = getattr(cfg, method) if method in METHOD_SETTINGS else None
    for name in ("r", "num_virtual_tokens"):
        value = getattr(block, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"methods.{method}.{name}: must be at least 1, got {value}")
    if isinstance(block, LoraSettings) and not block.targets:
        raise ConfigError("methods.lora.targets: name at least one module (e.g. [c_attn])")


def sized_val_examples(cfg: FinetuneConfig, n_train: int) -> int:
    """Validation examples scored at each evaluation: `val_examples` at most, and no more than half the training
    examples (at least 16), so that a small run does not spend its time scoring a large validation set."""
    return min(cfg.val_examples, max(16, n_train // 2))


def max_target_tokens(spec: TaskSpec, cfg: FinetuneConfig) -> int:
    return cfg.max_target_tokens or spec.max_target_tokens


def predict_settings(spec: TaskSpec, cfg: FinetuneConfig, max_length: int, reserved: int) -> PredictSettings:
    """The prediction settings a config implies; `max_length` counts the `reserved` virtual-token positions."""
    return PredictSettings(max_length=max_length, batch_size=cfg.eval_batch_size, doc_stride=cfg.doc_stride,
                           max_answer_length=cfg.max_answer_length, n_best=cfg.n_best, num_beams=cfg.num_beams,
                           max_new_tokens=max_target_tokens(spec, cfg), keep_source=cfg.keep_source,
                           reserved_positions=reserved)
