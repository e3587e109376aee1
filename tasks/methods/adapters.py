"""Adaptation methods: which weights train, and how a trained model is saved and loaded again.

- full:   every weight trains; the whole model (head included) is saved with `save_pretrained`.
- linear: the backbone is frozen and only the head trains (kinds with a head); the head's weights are saved
          alone (`head.safetensors`), the backbone is referenced.
- lora:   PEFT LoRA on `methods.lora.targets` (configs/finetune/defaults.yaml: every linear layer), rank `r`.
- prompt: PEFT prompt tuning (`num_virtual_tokens` trained input embeddings).
- prefix: PEFT prefix tuning (trained per-layer keys/values).

The task's kind says which methods apply, which head it puts on the backbone (`head_class`, `head_config`), the
head's attribute name (`head_module`, PEFT's `modules_to_save`, so a reloaded classifier does not predict at
random) and the PEFT task type. A formulation that puts its own head on a task (extractive summarization's sentence
scorer on a generation task) passes it as `head=HeadChoice(...)`: that head's class and attribute name replace the
kind's, and PEFT gets no task type (a plain `PeftModel`) with the head in `modules_to_save`. Every saved folder
also holds the tokenizer and `gpt2suite.json` (task, kind, method, labels, the backbone it was trained from, and
what the formulation adds under `extra`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpt2core.errors import CheckpointError
from gpt2core.io import atomic_write_dir
from tasks.data.spec import TaskSpec
from tasks.errors import MethodError
from tasks.kinds import get_kind
from tasks.kinds.base import FINETUNE_METHODS

if TYPE_CHECKING:  # annotations only: this module loads without torch (the leaderboard plans with it)
    import torch.nn as nn

    from tasks.methods.finetune.config import FinetuneConfig

METHODS = FINETUNE_METHODS
PEFT_METHODS = ("lora", "prompt", "prefix")
META_FILE = "gpt2suite.json"
HEAD_FILE = "head.safetensors"


@dataclass(frozen=True)
class HeadChoice:
    """A head that replaces the kind's: its class (a `GPT2HeadModel`) and its attribute name (`modules_to_save`)."""

    cls: Any
    module: str


def _head(spec: TaskSpec, head: HeadChoice | None) -> tuple[Any, str | None]:
    """(head class or None, head attribute name or None): the override's, else the kind's."""
    if head is not None:
        return head.cls, head.module
    kind = get_kind(spec.kind)
    return kind.head_class(), kind.head_module


def tokenizer_of(folder: str | os.PathLike) -> Any:
    """The tokenizer saved in a model folder; a missing folder is bad input (gpt2core's loader raises
    FileNotFoundError for it), reported as a `CheckpointError`."""
    from gpt2core.tokenizer import load_tokenizer

    try:
        return load_tokenizer(folder)
    except FileNotFoundError as e:
        raise CheckpointError(str(e)) from None


def check_method(spec: TaskSpec, method: str) -> None:
    """A `MethodError` unless `method` exists and applies to the task's kind."""
    get_kind(spec.kind).check_method(spec, method)


def applicable_methods(spec: TaskSpec) -> tuple[str, ...]:
    return tuple(get_kind(spec.kind).finetune_methods)


def peft_config(spec: TaskSpec, method: str, cfg: FinetuneConfig, head: HeadChoice | None = None) -> Any:
    """PEFT's config for `method`, from that method's settings block only."""
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, PromptTuningInit, TaskType

    task_type = TaskType[get_kind(spec.kind).peft_task_type] if head is None else None
    if method == "lora":
        s = cfg.lora
        return LoraConfig(task_type=task_type, r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout,
                          target_modules=list(s.targets), modules_to_save=[head.module] if head else None)
    if head is not None:
        raise MethodError(f"method {method!r} does not apply to a {head.cls.__name__} head (full, lora)")
    if method == "prompt":
        # Start from embeddings of random vocabulary tokens: PEFT's RANDOM init draws N(0, 1), ~50x the scale of
        # GPT-2's token embeddings, which swamps the real input at the start of training.
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=cfg.prompt.num_virtual_tokens,
                                  prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)
    if method == "prefix":
        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=cfg.prefix.num_virtual_tokens,
                                  prefix_projection=cfg.prefix.prefix_projection)
    raise MethodError(f"method {method!r} is not a PEFT method ({', '.join(PEFT_METHODS)})")


def with_head(spec: TaskSpec, backbone: nn.Module, head: HeadChoice | None = None) -> nn.Module:
    """The backbone with the kind's head (or `head`) around it (freshly initialised), or the backbone itself."""
    if head is not None:
        return head.cls.from_backbone(backbone)
    kind = get_kind(spec.kind)
    cls = kind.head_class()
    return cls.from_backbone(backbone, **kind.head_config(spec)) if cls is not None else backbone


def build_model(spec: TaskSpec, backbone: nn.Module, method: str, cfg: FinetuneConfig,
                head: HeadChoice | None = None) -> nn.Module:
    """The model to train: the backbone with the task's head (if any), wrapped or frozen for `method`."""
    check_method(spec, method)
    head_cls, head_module = _head(spec, head)
    model = with_head(spec, backbone, head)
    if method == "linear":
        if head_module is None:  # pragma: no cover - check_method refuses linear for kinds without a head
            raise MethodError(f"method 'linear' needs a task head; {get_kind(spec.kind).name} tasks have none")
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith(head_module + ".")
    elif method in PEFT_METHODS:
        from peft import get_peft_model

        if method == "prompt" and head_cls is not None:
            model.n_virtual_tokens = cfg.prompt.num_virtual_tokens  # span/pool positions skip the virtual tokens
        model = get_peft_model(model, peft_config(spec, method, cfg, head))
        _check_head_trains(head_module, model)
    return model


def _check_head_trains(head: str | None, model: nn.Module) -> None:
    if head and not any(p.requires_grad for n, p in model.named_parameters() if f".{head}." in f".{n}"):
        raise RuntimeError(f"PEFT did not make the {head!r} head trainable; check modules_to_save")  # pragma: no cover


def n_virtual_tokens(model: nn.Module) -> int:
    """Positions that prompt/prefix tuning's virtual tokens take from the model's n_positions."""
    peft_config_ = getattr(model, "active_peft_config", None)
    return int(getattr(peft_config_, "num_virtual_tokens", 0) or 0) if peft_config_ is not None else 0


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; tied weights count once."""
    params = list(model.parameters())  # parameters() already yields a shared tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def save_trained(model: nn.Module, out_dir: str | os.PathLike, spec: TaskSpec, method: str,
                 base_model: str | os.PathLike, tokenizer: Any, head: HeadChoice | None = None,
                 extra: dict[str, Any] | None = None) -> Path:
    """Save what `method` trained into `out_dir` (atomically: built beside it, then swapped into place).
    `extra` (JSON values) goes into gpt2suite.json under "extra": what a formulation needs to predict again."""

    def fill(tmp: Path) -> None:
        if method == "linear":
            from safetensors.torch import save_file

            head_ = getattr(model, _head(spec, head)[1])
            save_file({k: v.detach().contiguous().cpu() for k, v in head_.state_dict().items()}, tmp / HEAD_FILE)
        else:
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {"task": spec.name, "task_version": spec.version, "kind": spec.kind, "method": method,
                "label_names": list(spec.label_names), "base_model": os.fspath(base_model)}
        if extra:
            meta["extra"] = extra
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    return atomic_write_dir(out_dir, fill)


def read_meta(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The `gpt2suite.json` of a folder written by `save_trained`, or None when there is none."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MethodError(f"{path} is not valid JSON ({e}); the fine-tuned model folder is damaged") from None
    if not isinstance(meta, dict) or not {"task", "method", "base_model"} <= set(meta):
        raise MethodError(f"{path} lacks task, method or base_model; the fine-tuned model folder is damaged")
    return meta


def load_trained(spec: TaskSpec, model_path: str | os.PathLike, adapter: str | os.PathLike | None = None,
                 device: str = "cpu", head: HeadChoice | None = None) -> tuple[nn.Module, Any, dict[str, Any]]:
    """(model, tokenizer, info) for evaluation.

    `model_path` is a backbone, or a folder written by `save_trained` (full fine-tuning, or an adapter / head
    whose backbone is then read from its `gpt2suite.json`). `adapter` is an adapter or head folder to put on the
    backbone `model_path`. A plain backbone serves kinds without a head as is; the others need a trained head.
    info: method, base_model, adapter (path or None), extra (the formulation's gpt2suite.json "extra", or {}).
    `head` replaces the kind's head (the one the model was trained with).
    """
    from gpt2core.checkpoint import load_model

    kind = get_kind(spec.kind)
    head_cls, head_module = _head(spec, head)
    model_path = Path(model_path)
    meta = read_meta(model_path)
    if adapter is None and meta is not None and meta["method"] != "full":
        adapter, model_path = model_path, Path(meta["base_model"])
    ameta = read_meta(adapter) if adapter is not None else None
    if adapter is not None and ameta is None:
        raise MethodError(f"{adapter} holds no {META_FILE}: not an adapter or head saved by `gpt2suite finetune`")
    for m in (meta, ameta):
        if m is not None and m["task"] != spec.name:
            raise MethodError(f"the model was fine-tuned for task {m['task']!r}, not {spec.name!r}")
        formulation = (m or {}).get("extra", {}).get("formulation")
        if formulation and head is None:
            raise MethodError(f"{adapter or model_path} was trained as an {formulation} model with its own head; "
                              f"evaluate it with `gpt2suite eval-{formulation}`")

    tok_dir = adapter if adapter is not None and (Path(adapter) / "tokenizer_config.json").exists() else model_path
    tokenizer = tokenizer_of(tok_dir)
    if adapter is None and meta is not None:  # full fine-tuning
        model: nn.Module = head_cls.from_pretrained(model_path) if head_cls is not None else load_model(model_path)
        return model.to(device).eval(), tokenizer, {"method": "full", "base_model": meta["base_model"], "adapter": None,
                                                    "extra": meta.get("extra") or {}}
    backbone = load_model(model_path, device=device)
    if adapter is None:
        if head_cls is not None:
            raise MethodError(
                f"{model_path} is a plain backbone with no {kind.name} head; pass --adapter (a folder written by "
                f"`gpt2suite finetune`) or a fully fine-tuned model folder")
        return backbone, tokenizer, {"method": "pretrained", "base_model": os.fspath(model_path), "adapter": None,
                                     "extra": {}}

    method = ameta["method"]
    if method not in METHODS or method == "full":
        raise MethodError(f"{adapter}/{META_FILE} names method {method!r}, not an adapter or head method")
    model = with_head(spec, backbone, head)
    if method == "linear":
        from safetensors.torch import load_file

        getattr(model, head_module).load_state_dict(load_file(Path(adapter) / HEAD_FILE))
    else:
        from peft import PeftModel

        if method == "prompt" and head_cls is not None:
            model.n_virtual_tokens = _adapter_virtual_tokens(adapter)
        model = PeftModel.from_pretrained(model, adapter)
    info = {"method": method, "base_model": os.fspath(model_path), "adapter": os.fspath(adapter),
            "extra": ameta.get("extra") or {}}
    return model.to(device).eval(), tokenizer, info


def _adapter_virtual_tokens(adapter: str | os.PathLike) -> int:
    cfg = json.loads((Path(adapter) / "adapter_config.json").read_text())
    return int(cfg.get("num_virtual_tokens") or 0)
