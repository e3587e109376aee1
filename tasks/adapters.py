"""Adaptation methods: which weights train, and how a trained model is saved and loaded again.

- full:   every weight trains; the whole model (head included) is saved with `save_pretrained`.
- linear: the backbone is frozen and only the head trains (classification and QA only); the head's weights
          are saved alone (`head.safetensors`), the backbone is referenced.
- lora:   PEFT LoRA on `lora_targets` (configs/finetune/defaults.yaml: every linear layer), rank `lora_r`.
- prompt: PEFT prompt tuning (`num_virtual_tokens` trained input embeddings).
- prefix: PEFT prefix tuning (trained per-layer keys/values).

With PEFT, classification and QA use the task types SEQ_CLS / QUESTION_ANS, whose `modules_to_save` (`score`,
`qa_outputs`) train and save the head beside the adapter, so a reloaded classifier does not predict at random;
generation tasks use CAUSAL_LM on the backbone itself. Every saved folder also holds the tokenizer and
`gpt2suite.json` (task, kind, method, labels, the backbone it was trained from).
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from tasks.heads import HEADS, GPT2HeadModel
from tasks.registry import TaskSpec

METHODS = ("full", "linear", "lora", "prompt", "prefix")
PEFT_METHODS = ("lora", "prompt", "prefix")
META_FILE = "gpt2suite.json"
HEAD_FILE = "head.safetensors"


class MethodError(ValueError):
    """An adaptation method that does not exist or does not apply to the task."""


def check_method(task: TaskSpec, method: str) -> None:
    if method not in METHODS:
        close = difflib.get_close_matches(method, METHODS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise MethodError(f"unknown method {method!r}.{hint} Known methods: {', '.join(METHODS)}")
    if method == "linear" and task.kind == "generation":
        raise MethodError(
            f"method 'linear' (frozen backbone, train only a head) applies to classification and QA tasks; "
            f"{task.name!r} is a generation task with no task head. Use full, lora, prompt or prefix"
        )


def applicable_methods(task: TaskSpec) -> tuple[str, ...]:
    return tuple(m for m in METHODS if not (m == "linear" and task.kind == "generation"))


def _head_config(task: TaskSpec) -> dict[str, Any]:
    if task.kind != "classification":
        return {}
    return {"num_labels": len(task.label_names), "id2label": dict(enumerate(task.label_names)),
            "label2id": {name: i for i, name in enumerate(task.label_names)}}


def head_name(task: TaskSpec) -> str | None:
    return {"classification": "score", "qa": "qa_outputs"}.get(task.kind)


def _peft_config(task: TaskSpec, method: str, cfg: Any) -> Any:
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, PromptTuningInit, TaskType

    task_type = {"classification": TaskType.SEQ_CLS, "qa": TaskType.QUESTION_ANS,
                 "generation": TaskType.CAUSAL_LM}[task.kind]
    if method == "lora":
        return LoraConfig(task_type=task_type, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                          lora_dropout=cfg.lora_dropout, target_modules=list(cfg.lora_targets))
    if method == "prompt":
        # Start from embeddings of random vocabulary tokens: PEFT's RANDOM init draws N(0, 1), ~50x the scale of
        # GPT-2's token embeddings, which swamps the real input at the start of training.
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=cfg.num_virtual_tokens,
                                  prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)
    return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=cfg.num_virtual_tokens,
                              prefix_projection=cfg.prefix_projection)


def build_model(task: TaskSpec, backbone: nn.Module, method: str, cfg: Any) -> nn.Module:
    """The model to train: the backbone with the task's head (if any), wrapped or frozen for `method`.

    `cfg` needs lora_r, lora_alpha, lora_dropout, lora_targets, num_virtual_tokens, prefix_projection.
    """
    check_method(task, method)
    model: nn.Module = backbone
    if task.kind in HEADS:
        model = HEADS[task.kind].from_backbone(backbone, **_head_config(task))
    if method == "linear":
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith(head_name(task) + ".")
    elif method in PEFT_METHODS:
        from peft import get_peft_model

        if method == "prompt" and isinstance(model, GPT2HeadModel):
            model.n_virtual_tokens = cfg.num_virtual_tokens
        model = get_peft_model(model, _peft_config(task, method, cfg))
        _check_head_trains(task, model)
    return model


def _check_head_trains(task: TaskSpec, model: nn.Module) -> None:
    head = head_name(task)
    if head and not any(p.requires_grad for n, p in model.named_parameters() if f".{head}." in f".{n}"):
        raise RuntimeError(f"PEFT did not make the {head!r} head trainable; check modules_to_save")  # pragma: no cover


def n_virtual_tokens(model: nn.Module) -> int:
    """Positions that prompt/prefix tuning's virtual tokens take from the model's n_positions."""
    peft_config = getattr(model, "active_peft_config", None)
    return int(getattr(peft_config, "num_virtual_tokens", 0) or 0) if peft_config is not None else 0


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; tied weights count once."""
    params = list(model.parameters())  # parameters() already yields a shared tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def save_trained(model: nn.Module, out_dir: str | os.PathLike, task: TaskSpec, method: str,
                 base_model: str | os.PathLike, tokenizer: Any) -> Path:
    """Save what `method` trained into `out_dir` (atomically, via a sibling temporary folder)."""
    import shutil
    import tempfile

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if method == "linear":
            from safetensors.torch import save_file

            head = getattr(model, head_name(task))
            save_file({k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}, tmp / HEAD_FILE)
        else:
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {"task": task.name, "task_version": task.version, "kind": task.kind, "method": method,
                "label_names": list(task.label_names), "base_model": os.fspath(base_model)}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_meta(folder: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(folder) / META_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the fine-tuned model folder is damaged") from None


def load_trained(task: TaskSpec, model_path: str | os.PathLike, adapter: str | os.PathLike | None = None,
                 device: str = "cpu") -> tuple[nn.Module, Any, dict[str, Any]]:
    """(model, tokenizer, info) for evaluation.

    `model_path` is a backbone, or a folder written by `save_trained` (full fine-tuning, or an adapter / head
    whose backbone is then read from its `gpt2suite.json`). `adapter` is an adapter or head folder to put on the
    backbone `model_path`. A plain backbone serves generation tasks as is; classification and QA need a head.
    info: method, base_model, adapter (path or None).
    """
    from gpt2core.checkpoint import load_model
    from gpt2core.tokenizer import load_tokenizer

    model_path = Path(model_path)
    meta = read_meta(model_path)
    if adapter is None and meta is not None and meta["method"] != "full":
        adapter, meta_base = model_path, meta["base_model"]
        model_path = Path(meta_base)
    ameta = read_meta(adapter) if adapter is not None else None
    if adapter is not None and ameta is None:
        raise ValueError(f"{adapter} holds no {META_FILE}: not an adapter or head saved by `gpt2suite finetune`")
    for m in (meta, ameta):
        if m is not None and m["task"] != task.name:
            raise ValueError(f"the model was fine-tuned for task {m['task']!r}, not {task.name!r}")

    tok_dir = adapter if adapter is not None and (Path(adapter) / "tokenizer_config.json").exists() else model_path
    tokenizer = load_tokenizer(tok_dir)
    if adapter is None and meta is not None:  # full fine-tuning
        model: nn.Module = (HEADS[task.kind].from_pretrained(model_path) if task.kind in HEADS
                            else load_model(model_path))
        return model.to(device).eval(), tokenizer, {"method": "full", "base_model": meta["base_model"], "adapter": None}
    backbone = load_model(model_path, device=device)
    if adapter is None:
        if task.kind in HEADS:
            raise ValueError(
                f"{model_path} is a plain backbone with no {task.kind} head; pass --adapter (a folder written by "
                f"`gpt2suite finetune`) or a fully fine-tuned model folder"
            )
        return backbone, tokenizer, {"method": "pretrained", "base_model": os.fspath(model_path), "adapter": None}

    method = ameta["method"]
    model = HEADS[task.kind].from_backbone(backbone, **_head_config(task)) if task.kind in HEADS else backbone
    if method == "linear":
        from safetensors.torch import load_file

        getattr(model, head_name(task)).load_state_dict(load_file(Path(adapter) / HEAD_FILE))
    else:
        from peft import PeftModel

        if method == "prompt" and isinstance(model, GPT2HeadModel):
            model.n_virtual_tokens = _adapter_virtual_tokens(adapter)
        model = PeftModel.from_pretrained(model, adapter)
    info = {"method": method, "base_model": os.fspath(model_path), "adapter": os.fspath(adapter)}
    return model.to(device).eval(), tokenizer, info


def _adapter_virtual_tokens(adapter: str | os.PathLike) -> int:
    cfg = json.loads((Path(adapter) / "adapter_config.json").read_text())
    return int(cfg.get("num_virtual_tokens") or 0)
