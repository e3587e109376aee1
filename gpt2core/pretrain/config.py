"""Pretraining configuration: typed dataclasses read from YAML; an unknown key or a wrong type names the key and file.

Paths may use `${DATA_DIR}` (the local data mirror: `GPT2SUITE_DATA_DIR`, default `<repo>/../shared/data`) and
`${REPO}` (see `gpt2core.paths.expand_path`); other relative paths are taken from the current directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from gpt2core.errors import ConfigError
from gpt2core.hashing import share_ranges
from gpt2core.paths import expand_path
from gpt2core.typed_config import from_dict as _from_dict
from gpt2core.typed_config import read_yaml, unknown_name


PARALLELISMS = ("ddp", "fsdp")


@dataclass
class KeepRule:
    """Keep only the JSONL records in one part of a split carved by a stable hash of a record field.

    `keep: {key: id, shares: [0.8, 0.1, 0.1], part: 0, seed: 0}` keeps the records whose
    `gpt2core.hashing.share_position(record[key], resolution, seed)` lies in range number `part` (0-based) of
    `gpt2core.hashing.share_ranges(shares)`: with shares 0.8/0.1/0.1 (resolution 10), part 0 keeps the positions
    0-7 of 10, i.e. the records whose `int(sha256(str(record[key]))[:8 hex digits], 16) % 10 < 8`. A dataset whose
    splits are carved by the same rule (same key, shares and seed) contributes exactly the records of that split.
    """

    key: str = "id"  # dotted path of the record field whose value (as text) is hashed
    shares: list[float] = field(default_factory=lambda: [1.0])  # consecutive parts of [0, 1), summing to 1
    part: int = 0  # which part to keep
    seed: int = 0  # 0: hash the value itself; else f"{seed}:{value}"

    def span(self) -> tuple[int, int, int]:
        """(resolution, first position, end position) of the kept part."""
        resolution, ranges = share_ranges(self.shares)
        return (resolution, *ranges[self.part])

    def describe(self) -> dict[str, Any]:
        resolution, lo, hi = self.span()
        return {**dataclasses.asdict(self), "resolution": resolution, "positions": [lo, hi]}


@dataclass
class SourceConfig:
    """One text source. `path` is a file or a glob (`.txt`, `.txt.gz`, `.jsonl`, `.jsonl.gz`), or use `dataset`.

    `keep` (JSONL and dataset sources only) keeps a hash-carved part of the records, e.g. the train part of a
    dataset that has no official split: `keep: {key: id, shares: [0.8, 0.1, 0.1], part: 0}` (see `KeepRule`).
    """

    path: str | None = None
    field: str = "text"  # JSONL: dotted path of the text field (`translation.en`); lists are joined with spaces
    name: str | None = None  # label in the manifest (default: the file's name)
    dedup: bool = False  # drop repeated texts (a QA dataset repeats each context once per question)
    keep: KeepRule | None = None  # keep only the records of one hash-carved part (see KeepRule)
    dataset: str | None = None  # a `datasets` source instead of files: load_dataset(dataset, dataset_config)
    dataset_config: str | None = None
    split: str = "train"
    max_docs: int | None = None  # first N documents only (tests, quick runs)
    max_chars: int | None = None  # first N characters of each text file only


@dataclass
class TokenizerConfig:
    path: str | None = None  # an existing tokenizer folder; else one is trained on the corpus' train split
    vocab_size: int = 8192
    min_frequency: int = 2


@dataclass
class CorpusConfig:
    name: str = "corpus"
    sources: list[SourceConfig] = field(default_factory=list)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    val_every: int = 200  # JSONL: every 200th document is validation; text files: their last 1/200 of lines
    cache_dir: str = "${REPO}/data_cache/pretrain"
    prepared_dir: str | None = None  # use this prepared corpus folder (or packed shards) as is; skips preparation


@dataclass
class PretrainConfig:
    preset: str = "tiny"
    model: dict[str, Any] = field(default_factory=dict)  # GPT2Config overrides (n_layer, n_positions, dropout...)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    seq_len: int = 256
    micro_batch_size: int = 8
    grad_accum: int = 1
    max_steps: int = 1000
    max_tokens: int | None = None  # if set, max_steps = ceil(max_tokens / tokens per step)
    lr: float = 6e-4
    min_lr: float = 6e-5
    warmup_steps: int = 100
    lr_decay_steps: int | None = None  # cosine reaches min_lr here (default: max_steps)
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables
    optimizer: str = "adamw"  # adamw | muon (Muon for the blocks' 2-D matrices, AdamW at `lr` for the rest)
    muon_lr: float = 0.02  # Muon's peak lr; the warmup + cosine of `lr` scales it by the same factor
    muon_momentum: float = 0.95
    muon_nesterov: bool = True
    muon_ns_steps: int = 5  # Newton-Schulz iterations
    muon_weight_decay: float = 0.0  # decoupled, like AdamW's: each step shrinks weights by muon_lr * this
    muon_adjust_lr_fn: str = "original"  # original (Keller: sqrt(max(1, rows/cols))) | match_rms_adamw (Moonshot)
    eval_interval: int = 200
    eval_iters: int = 20
    eval_batch_size: int | None = None  # default: micro_batch_size
    log_interval: int = 10
    checkpoint_interval: int = 500
    keep_last_k: int = 3
    max_shard_size: str = "16MB"
    # auto: bf16 autocast + torch.compile on CUDA, fp32 without compile elsewhere (`resolved_for`; an explicit value
    # wins). Not bf16 on CPU by default: the AMD CPUs lent here emulate it, many times slower than fp32
    # (docs/ENVIRONMENT.md); compile costs 16-26 s there for 2-15%.
    dtype: str = "auto"  # auto | fp32 | bf16 (autocast; weights and optimizer stay fp32)
    compile: bool | str = "auto"  # auto | true | false
    device: str = "auto"  # auto | cpu | cuda
    # ddp: every rank holds the whole model and optimizer; fsdp (under torchrun): each transformer block and the
    # root are sharded over the ranks (torch FSDP2, fully_shard), checkpoints are sharded (torch.distributed.checkpoint)
    parallelism: str = "ddp"
    threads: int | None = None  # torch CPU threads (default: torch's choice)
    seed: int = 1337
    out_dir: str = "runs/pretrain"
    max_time_minutes: float | None = None  # stop cleanly (with a checkpoint) after this much wall time in this run
    ppl_eval: list[str] = field(default_factory=list)  # held-out text files for the final perplexity
    ppl_eval_stride: int | None = None  # default: seq_len // 2
    ppl_eval_max_chars: int | None = None
    plot_path: str | None = None  # also write the loss plot here (e.g. results/pretrain/NAME.png)
    progress: bool = True

    def tokens_per_step(self, world_size: int = 1) -> int:
        return self.micro_batch_size * self.grad_accum * world_size * self.seq_len


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> PretrainConfig:
    try:
        cfg = _from_dict(PretrainConfig, data or {}, "")
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> PretrainConfig:
    """Read a YAML config; `overrides` maps dotted keys (`corpus.tokenizer.vocab_size`) to values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pretraining config {path} does not exist (see configs/pretrain/*.yaml)")
    data = read_yaml(path, "pretraining config")
    data = _resolve_includes(data, path)
    for key, value in (overrides or {}).items():
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a mapping in {path}")
        node[last] = value
    return config_from_dict(data, str(path))


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _resolve_includes(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """`include: base.yaml` at the top level or in `corpus:` (or `corpus: file.yaml`): the named file (relative to
    this one) is read first and this mapping's keys are merged over it."""

    def load(name: Any, where: str) -> dict[str, Any]:
        if not isinstance(name, str):
            raise ConfigError(f"{path}: {where} must name a YAML file")
        inc = path.parent / expand_path(name)
        if not inc.is_file():
            raise ConfigError(f"{path}: {where} {name!r} not found (looked for {inc})")
        return _resolve_includes(read_yaml(inc, "included config"), inc)

    data = dict(data)
    if "include" in data:
        data = _deep_merge(load(data.pop("include"), "include"), data)
    corpus = data.get("corpus")
    if isinstance(corpus, str):
        data["corpus"] = load(corpus, "corpus")
    elif isinstance(corpus, dict) and "include" in corpus:
        corpus = dict(corpus)
        data["corpus"] = _deep_merge(load(corpus.pop("include"), "corpus.include"), corpus)
    return data


def validate(cfg: PretrainConfig) -> None:
    from gpt2core.config import PRESETS, GPT2Config

    if cfg.preset not in PRESETS:
        raise unknown_name("preset", cfg.preset, PRESETS, "preset")
    known = set(inspect.signature(GPT2Config.__init__).parameters) - {"self", "kwargs"}
    for key in cfg.model:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(f"unknown key 'model.{key}'" + (f"; did you mean {close[0]!r}?" if close else ""))
    if cfg.dtype not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"dtype: {cfg.dtype!r} is not one of auto, fp32, bf16")
    if isinstance(cfg.compile, str) and cfg.compile != "auto":  # the typed reader took a non-bool as text
        raise ConfigError(f"compile: expected true or false (or auto), got {cfg.compile!r}")
    if cfg.optimizer not in ("adamw", "muon"):
        raise unknown_name("optimizer", cfg.optimizer, ("adamw", "muon"), "optimizer")
    if cfg.parallelism not in PARALLELISMS:
        raise unknown_name("parallelism", cfg.parallelism, PARALLELISMS, "parallelism")
    if cfg.muon_adjust_lr_fn not in ("original", "match_rms_adamw"):
        raise ConfigError(f"muon_adjust_lr_fn: {cfg.muon_adjust_lr_fn!r} is not one of original, match_rms_adamw")
    if cfg.muon_ns_steps < 1:
        raise ConfigError(f"muon_ns_steps: must be at least 1, got {cfg.muon_ns_steps}")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ConfigError(f"device: {cfg.device!r} is not one of auto, cpu, cuda")
    for name in ("seq_len", "micro_batch_size", "grad_accum", "eval_iters", "log_interval", "eval_interval",
                 "checkpoint_interval", "keep_last_k"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}: must be at least 1, got {getattr(cfg, name)}")
    if cfg.max_steps < 1:
        raise ConfigError(f"max_steps: must be at least 1 (a run of no steps would save an untrained model), got "
                          f"{cfg.max_steps}")
    if cfg.warmup_steps < 0:
        raise ConfigError(f"warmup_steps: must not be negative, got {cfg.warmup_steps}")
    for name in ("max_tokens", "lr_decay_steps", "eval_batch_size", "threads", "ppl_eval_stride", "ppl_eval_max_chars"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise ConfigError(f"{name}: must be at least 1 (or left out), got {getattr(cfg, name)}")
    _check_numbers(cfg)
    n_positions = cfg.model.get("n_positions", PRESETS[cfg.preset]["n_positions"])
    if cfg.seq_len > n_positions:
        raise ConfigError(
            f"seq_len: {cfg.seq_len} exceeds the model's n_positions={n_positions} (preset {cfg.preset!r}); "
            "lower seq_len or set model.n_positions"
        )
    if cfg.corpus.val_every < 2:
        raise ConfigError(f"corpus.val_every: must be at least 2, got {cfg.corpus.val_every}")
    if not cfg.corpus.sources and not cfg.corpus.prepared_dir:
        raise ConfigError("corpus.sources: no sources given (and no corpus.prepared_dir)")
    for i, s in enumerate(cfg.corpus.sources):
        if (s.path is None) == (s.dataset is None):
            raise ConfigError(f"corpus.sources[{i}]: give exactly one of 'path' or 'dataset'")
        if s.keep is not None:
            _check_keep(s.keep, f"corpus.sources[{i}].keep")


def resolved_for(cfg: PretrainConfig, device: Any) -> PretrainConfig:
    """`cfg` with `dtype: auto` / `compile: auto` made concrete for `device` (a `torch.device` or its name):
    bf16 + compile on CUDA, fp32 without compile on CPU and MPS. Explicit values are kept. The trainer runs and
    records (checkpoints' pretrain_config.json) the resolved config, so a CPU run's records read as before."""
    cuda = str(device).split(":")[0] == "cuda"
    dtype = ("bf16" if cuda else "fp32") if cfg.dtype == "auto" else cfg.dtype
    compile_ = cuda if cfg.compile == "auto" else cfg.compile
    return dataclasses.replace(cfg, dtype=dtype, compile=compile_)


def _check_numbers(cfg: PretrainConfig) -> None:
    """Ranges of the float settings (the typed reader already refuses NaN and inf where the type says float)."""
    if not cfg.lr > 0:
        raise ConfigError(f"lr: must be above 0, got {cfg.lr}")
    if not 0 <= cfg.min_lr <= cfg.lr:
        raise ConfigError(f"min_lr: must lie in [0, lr={cfg.lr}] (the cosine decays from lr to min_lr), got "
                          f"{cfg.min_lr}")
    if not 0 <= cfg.weight_decay:
        raise ConfigError(f"weight_decay: must not be negative, got {cfg.weight_decay}")
    if not all(0 <= b < 1 for b in cfg.betas):
        raise ConfigError(f"betas: each must lie in [0, 1), got {list(cfg.betas)}")
    if not cfg.eps > 0:
        raise ConfigError(f"eps: must be above 0, got {cfg.eps}")
    if not cfg.muon_lr > 0:
        raise ConfigError(f"muon_lr: must be above 0, got {cfg.muon_lr}")
    if not 0 <= cfg.muon_momentum < 1:
        raise ConfigError(f"muon_momentum: must lie in [0, 1), got {cfg.muon_momentum}")
    if not 0 <= cfg.muon_weight_decay:
        raise ConfigError(f"muon_weight_decay: must not be negative, got {cfg.muon_weight_decay}")
    if not cfg.grad_clip >= 0:
        raise ConfigError(f"grad_clip: must be 0 (off) or more, got {cfg.grad_clip}")
    if cfg.max_time_minutes is not None and not cfg.max_time_minutes > 0:
        raise ConfigError(f"max_time_minutes: must be above 0 (or left out), got {cfg.max_time_minutes}")
    for key, value in cfg.model.items():  # GPT2Config overrides are untyped here: NaN would pass as a float
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"model.{key}: expected a finite number, got {value}")
        if key.endswith("_pdrop") and not (isinstance(value, (int, float)) and 0 <= value < 1):
            raise ConfigError(f"model.{key}: a dropout probability must lie in [0, 1), got {value!r}")


def _check_keep(rule: KeepRule, where: str) -> None:
    if not rule.shares or any(x <= 0 for x in rule.shares):
        raise ConfigError(f"{where}.shares: give one or more positive shares (e.g. [0.8, 0.1, 0.1]), got {rule.shares}")
    if sum(Decimal(str(x)) for x in rule.shares) != 1:
        raise ConfigError(f"{where}.shares: {rule.shares} must add up to 1")
    if not 0 <= rule.part < len(rule.shares):
        raise ConfigError(f"{where}.part: {rule.part} is not a part of {rule.shares} (0 to {len(rule.shares) - 1})")
    if not rule.key:
        raise ConfigError(f"{where}.key: name the record field to hash (e.g. id)")
