"""Weights to and from transformers' `GPT2LMHeadModel`, as configs and state dicts.

Hugging Face GPT-2 stores its projections as `Conv1D` (weight shaped `(in, out)`); ours are `nn.Linear`
(`(out, in)`), so those four matrices per block are transposed once here and everything else is a
name-for-name copy. This module knows our config and parameter names but not the model class, so that
`gpt2core.model` can build on it (`GPT2LMModel.from_hf`, `GPT2LMModel.to_hf`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from gpt2core.config import GPT2Config
from gpt2core.errors import CheckpointError

_CONV1D = re.compile(r"\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$")
# Buffers older transformers versions saved with GPT-2; they hold no weights.
_IGNORED = re.compile(r"\.attn\.(bias|masked_bias)$")


def config_from_hf(hf_config: Any) -> GPT2Config:
    """Our config from a transformers `GPT2Config`; variants that are not OpenAI's GPT-2 are refused."""
    act = getattr(hf_config, "activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"GPT-2 uses the tanh GELU; this checkpoint uses activation_function={act!r}, which "
                              "gpt2core does not support")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        if getattr(hf_config, flag, False):
            raise CheckpointError(f"checkpoints with {flag}=True are not OpenAI's GPT-2 and are not supported")
    return GPT2Config(
        vocab_size=hf_config.vocab_size,
        n_positions=hf_config.n_positions,
        n_embd=hf_config.n_embd,
        n_layer=hf_config.n_layer,
        n_head=hf_config.n_head,
        n_inner=hf_config.n_inner,
        layer_norm_epsilon=hf_config.layer_norm_epsilon,
        initializer_range=hf_config.initializer_range,
        **_special_ids(hf_config),
    )


def _special_ids(hf_config: Any) -> dict[str, int | None]:
    """bos/eos/pad ids, dropping any outside the vocabulary (transformers' defaults assume 50,257 tokens)."""
    ids = {k: getattr(hf_config, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    if ids["pad_token_id"] is None:
        ids["pad_token_id"] = ids["eos_token_id"]
    return {k: v if isinstance(v, int) and 0 <= v < hf_config.vocab_size else None for k, v in ids.items()}


def config_from_state_dict(sd: Mapping[str, torch.Tensor], n_head: int | None) -> GPT2Config:
    """The config a state dict (our names) implies; only the head count is not recorded in the weights."""
    vocab_size, n_embd = sd["transformer.wte.weight"].shape
    if n_head is None and (n_embd % 64 or n_embd < 64):
        raise CheckpointError(f"a state dict does not record n_head and n_embd={n_embd} is no multiple of 64: "
                              "pass n_head=")
    n_layer = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"transformer\.h\.(\d+)\.", k)))
    inner = sd["transformer.h.0.mlp.c_fc.weight"].shape[1]
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=sd["transformer.wpe.weight"].shape[0],
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head or n_embd // 64,  # GPT-2's head size is 64 at every official size
        n_inner=None if inner == 4 * n_embd else inner,
    )


def convert_hf_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A `GPT2LMHeadModel` state dict with our names and layouts (keys without `transformer.` are accepted)."""
    out = {}
    for key, value in sd.items():
        if not key.startswith(("transformer.", "lm_head.")):
            key = "transformer." + key  # a bare `GPT2Model` state dict
        if _IGNORED.search(key):
            continue
        out[key] = value.t().contiguous() if _CONV1D.search(key) else value
    return out


def hf_weights(model_or_path: Any, n_head: int | None = None) -> tuple[GPT2Config, dict[str, torch.Tensor]]:
    """(our config, our state dict without the tied `lm_head.weight`) from a `GPT2LMHeadModel`, a
    `save_pretrained` folder (or hub name) of one, or a state dict (give `n_head` unless it is n_embd / 64)."""
    if isinstance(model_or_path, Mapping):
        sd = convert_hf_state_dict(model_or_path)
        config = config_from_state_dict(model_or_path if "transformer.wte.weight" in model_or_path else sd, n_head)
    else:
        if isinstance(model_or_path, (str, os.PathLike)):
            from transformers import GPT2LMHeadModel

            model_or_path = GPT2LMHeadModel.from_pretrained(model_or_path)
        config = config_from_hf(model_or_path.config)
        sd = convert_hf_state_dict(model_or_path.state_dict())
    sd.pop("lm_head.weight", None)  # tied to wte
    return config, sd


def to_hf(config: GPT2Config, state_dict: Mapping[str, torch.Tensor]) -> Any:
    """A transformers `GPT2LMHeadModel` (in training mode, fp32) holding `state_dict` (our names) exactly."""
    from transformers import GPT2Config as HFGPT2Config
    from transformers import GPT2LMHeadModel

    c = config
    hf_config = HFGPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.n_positions,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_inner=c.n_inner,
        activation_function="gelu_new",
        resid_pdrop=c.resid_pdrop,
        embd_pdrop=c.embd_pdrop,
        attn_pdrop=c.attn_pdrop,
        layer_norm_epsilon=c.layer_norm_epsilon,
        initializer_range=c.initializer_range,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        pad_token_id=c.pad_token_id,
    )
    hf = GPT2LMHeadModel(hf_config)
    sd = {k: (v.t().contiguous() if _CONV1D.search(k) else v) for k, v in state_dict.items()}
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    if unexpected or [k for k in missing if not _IGNORED.search(k) and k != "lm_head.weight"]:
        raise CheckpointError(f"could not map weights onto GPT2LMHeadModel: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return hf
