"""GPT-2, as OpenAI defined it, in one file: attention, MLP, block, model.

Parameter names follow Hugging Face GPT-2 (`transformer.wte`, `transformer.h.N.attn.c_attn`, ...) with
`nn.Linear` layers, so HF weights import name for name (Conv1D matrices are transposed once, at load) and
PEFT's GPT-2 targets (`c_attn`) work unchanged. The model is a `PreTrainedModel` + `GenerationMixin`, so
`save_pretrained`/`from_pretrained`, the Trainer, PEFT and `generate` all work on it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from gpt2core.config import GPT2Config
from gpt2core.errors import CheckpointError, ModelInputError
from gpt2core.fused_loss import fused_linear_cross_entropy
from gpt2core.generation import FAST_GENERATE_ARGS
from gpt2core.generation import check_arguments as check_generation_arguments
from gpt2core.generation import generate as fast_generate
from gpt2core.hf_interop import hf_weights, to_hf
from gpt2core.kv_cache import KVCache

__all__ = ["GPT2Config", "GPT2LMModel", "KVCache", "build_attention_mask", "causal_lm_loss"]

# transformers renamed the output's `past_key_values` field to `cache` after 5.17; write whichever exists.
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        self.n_head, self.n_embd, self.layer_idx = config.n_head, config.n_embd, layer_idx
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: Any, is_causal: bool) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, nh, past + T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_pdrop if self.training else 0.0, is_causal=is_causal
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        self.c_fc = nn.Linear(config.n_embd, inner)
        self.c_proj = nn.Linear(inner, config.n_embd)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: Any, is_causal: bool) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, cache, is_causal)
        return x + self.mlp(self.ln_2(x))


class GPT2Transformer(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        # wte first: PEFT takes the first parameter with vocab_size rows as the word embedding.
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)


def build_attention_mask(
    attention_mask: torch.Tensor | None, q_len: int, past_len: int, device: torch.device
) -> tuple[torch.Tensor | None, bool]:
    """(mask for SDPA or None, is_causal) for `q_len` new tokens after `past_len` cached ones.

    `attention_mask` is the usual 2-D 0/1 padding mask over past + new tokens (left or right padding).
    A padded query row would otherwise attend to nothing (NaN in SDPA), so every query may attend to itself.
    """
    if attention_mask is not None and attention_mask.dim() == 4:
        return attention_mask, False
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None
    if attention_mask is None:
        if past_len == 0:
            return None, True
        if q_len == 1:
            return None, False
    k_pos = torch.arange(past_len + q_len, device=device)
    q_pos = torch.arange(past_len, past_len + q_len, device=device)
    allowed = k_pos[None, :] <= q_pos[:, None]  # (T, past + T)
    if attention_mask is None:
        return allowed, False
    if attention_mask.shape[-1] != past_len + q_len:
        raise ModelInputError(
            f"attention_mask covers {attention_mask.shape[-1]} positions but past + input is {past_len + q_len}"
        )
    keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, past + T)
    diagonal = k_pos[None, :] == q_pos[:, None]
    return (allowed & keep) | diagonal, False


class GPT2LMModel(PreTrainedModel, GenerationMixin):
    config_class = GPT2Config
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]
    _supports_sdpa = True
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.transformer = GPT2Transformer(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    # GPT-2's init: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer) (GPT-2 paper, section 2.3).
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        if isinstance(module, (CausalSelfAttention, MLP)):
            init.normal_(module.c_proj.weight, mean=0.0, std=std / math.sqrt(2 * self.config.n_layer))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def _check_shapes(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None,
                      attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None,
                      labels: torch.Tensor | None, past_len: int, targets: torch.Tensor | None = None) -> None:
        """Shapes the model cannot take fail here, named, rather than as a broadcasting error deep inside."""
        if input_ids is not None:
            if input_ids.dim() != 2:
                fix = "; add a batch dimension: input_ids[None]" if input_ids.dim() == 1 else ""
                raise ModelInputError(f"input_ids must be 2-D (batch, tokens), got shape {list(input_ids.shape)}{fix}")
            if input_ids.is_floating_point() or input_ids.is_complex():
                raise ModelInputError(f"input_ids must be integer token ids, got {input_ids.dtype}")
            shape = tuple(input_ids.shape)
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.n_embd:
                raise ModelInputError(f"inputs_embeds must be (batch, tokens, n_embd={self.config.n_embd}), got shape "
                                      f"{list(inputs_embeds.shape)}")
            shape = tuple(inputs_embeds.shape[:2])
        B, T = shape
        if attention_mask is not None and attention_mask.dim() != 4:
            if attention_mask.dim() != 2 or attention_mask.shape[0] not in (1, B) \
                    or attention_mask.shape[1] != past_len + T:
                raise ModelInputError(
                    f"attention_mask must be (batch={B}, past + tokens={past_len + T}) with 1 for real tokens and 0 "
                    f"for padding, got shape {list(attention_mask.shape)}; make it with the tokenizer, beside input_ids"
                )
        if position_ids is not None and (position_ids.dim() not in (1, 2) or position_ids.shape[-1] != T
                                         or (position_ids.dim() == 2 and position_ids.shape[0] not in (1, B))):
            raise ModelInputError(f"position_ids must be (batch={B}, tokens={T}) or (tokens={T},), got shape "
                                  f"{list(position_ids.shape)}")
        for name, t in (("labels", labels), ("targets", targets)):
            if t is not None and tuple(t.shape) != shape:
                raise ModelInputError(f"{name} must have the shape of the input, {list(shape)}, got {list(t.shape)}")

    def _check_inputs(self, input_ids: torch.Tensor | None, past_len: int, q_len: int,
                      position_ids: torch.Tensor | None = None) -> None:
        n_pos = self.config.n_positions
        if past_len + q_len > n_pos:
            raise ModelInputError(
                f"input of {q_len} tokens after {past_len} cached ones exceeds the model's n_positions={n_pos}; "
                "truncate or window the input"
            )
        # A CPU index error is readable but a CUDA one is not, so check ids up front (skipped while
        # compiling and when training on an accelerator, where the data pipeline guarantees the range).
        if input_ids is not None and (input_ids.device.type == "cpu" or not self.training):
            if not torch.compiler.is_compiling() and input_ids.numel():
                lo, hi = int(input_ids.min()), int(input_ids.max())
                if lo < 0 or hi >= self.config.vocab_size:
                    raise ModelInputError(
                        f"token ids must lie in [0, {self.config.vocab_size}) for this model; got min {lo}, "
                        f"max {hi} (was the input tokenized with another tokenizer?)"
                    )
        if position_ids is not None and (position_ids.device.type == "cpu" or not self.training):
            if not torch.compiler.is_compiling() and position_ids.numel():
                lo, hi = int(position_ids.min()), int(position_ids.max())
                if lo < 0 or hi >= n_pos:
                    raise ModelInputError(f"position_ids must lie in [0, {n_pos}) (the model's n_positions); got "
                                          f"min {lo}, max {hi}")

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        past_key_values: Cache | KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int = 0,
        cache: Cache | KVCache | None = None,
        targets: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """transformers' causal-LM forward. `targets` (the next token of every position, -100: not counted) asks
        for the mean next-token loss only: the LM head is then fused with the loss (`gpt2core.fused_loss`), no
        logits are returned, and training steps skip the largest tensor they would make (pretraining uses it)."""
        # transformers 5.x passes the cache as `cache=`, PEFT 0.21 as `past_key_values=`: accept both.
        cache = cache if cache is not None else past_key_values
        if (input_ids is None) == (inputs_embeds is None):
            raise ModelInputError("pass exactly one of input_ids or inputs_embeds")
        if use_cache and cache is None:
            cache = DynamicCache()
        past_len = cache.get_seq_length() if cache is not None else 0
        self._check_shapes(input_ids, inputs_embeds, attention_mask, position_ids, labels, past_len, targets)
        T = (input_ids if inputs_embeds is None else inputs_embeds).shape[1]
        self._check_inputs(input_ids, past_len, T, position_ids)
        x = self.transformer.wte(input_ids) if inputs_embeds is None else inputs_embeds

        if position_ids is None:
            if attention_mask is not None and attention_mask.dim() == 2:
                # Positions count real tokens only, so left-padded rows start at 0 like unpadded ones.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
            else:
                position_ids = torch.arange(past_len, past_len + T, device=x.device)[None]
        mask, is_causal = build_attention_mask(attention_mask, T, past_len, x.device)

        x = self.transformer.drop(x + self.transformer.wpe(position_ids))
        hidden_states = [x] if output_hidden_states else None
        for block in self.transformer.h:
            x = block(x, mask, cache, is_causal)
            if hidden_states is not None:
                hidden_states.append(x)
        x = self.transformer.ln_f(x)
        if hidden_states is not None:
            hidden_states[-1] = x  # as in transformers: the last entry is after the final LayerNorm
        if targets is not None:
            return CausalLMOutputWithPast(loss=self._next_token_loss(x, targets), logits=None,
                                          hidden_states=tuple(hidden_states) if hidden_states is not None else None)
        logits = self.lm_head(x[:, -logits_to_keep:] if logits_to_keep else x)

        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, kwargs.get("num_items_in_batch"))
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{_CACHE_FIELD: cache if use_cache or past_key_values is not None else None},
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
        )

    def _next_token_loss(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        head = self.lm_head
        targets = targets.to(x.device).reshape(-1)
        # Under torch.compile the plain loss: the compiler fuses it itself, and would unroll the chunk loop.
        if type(head) is nn.Linear and head.bias is None and not torch.compiler.is_compiling():
            return fused_linear_cross_entropy(x.reshape(-1, x.shape[-1]), head.weight, targets)
        return F.cross_entropy(head(x).float().reshape(targets.numel(), -1), targets, ignore_index=-100)

    def prepare_inputs_for_generation(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # transformers 5.x hands the cache over as `cache`; PEFT's prompt/prefix tuning hooks read
        # `past_key_values`. Renaming here keeps both generating the right text.
        inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        if "cache" in inputs:
            inputs["past_key_values"] = inputs.pop("cache")
        return inputs

    def generate(self, *args: Any, **kwargs: Any) -> torch.LongTensor:
        """Generate with the fast KV-cache loop of `gpt2core.generation` where it applies, else transformers'.

        The fast path takes `input_ids`, `attention_mask`, `max_new_tokens`, `do_sample`, `temperature`,
        `top_k`, `top_p`, `seed`, `eos_token_id`, `pad_token_id`, `stop_strings` and `tokenizer`. Any other
        argument (beams, a generation config, `inputs_embeds`, ...) and any wrapper that hooks
        `prepare_inputs_for_generation` (PEFT's prompt and prefix tuning do) go through
        `GenerationMixin.generate`, which honours them. `fast=False` forces that path.
        """
        fast = kwargs.pop("fast", True)
        # Checked for both paths: transformers' own checks raise plain ValueErrors (or none, for a NaN temperature).
        check_generation_arguments(**{k: kwargs[k] for k in ("max_new_tokens", "temperature", "top_k", "top_p")
                                      if kwargs.get(k) is not None})
        hooked = "prepare_inputs_for_generation" in self.__dict__
        if fast and not hooked and set(kwargs) <= FAST_GENERATE_ARGS and len(args) <= 1:
            return fast_generate(self, *args, **kwargs)
        kwargs.pop("seed", None)
        return GenerationMixin.generate(self, *args, **kwargs)

    def has_plain_layers(self) -> bool:
        """True when every layer is this file's own module (no adapter or other wrapper), so that a decoding step
        that reads the weights directly (`gpt2core.generation.DecodeStep`) computes what `forward` would."""

        def plain(b: nn.Module) -> bool:
            linears = (b.attn.c_attn, b.attn.c_proj, b.mlp.c_fc, b.mlp.c_proj)
            return (type(b) is Block and type(b.attn) is CausalSelfAttention and type(b.mlp) is MLP
                    and all(type(m) is nn.Linear for m in linears))

        head = self.lm_head
        return all(plain(b) for b in self.transformer.h) and type(head) is nn.Linear and head.bias is None

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """transformers' `from_pretrained`, except that a folder missing some of the weights is an error: transformers
        would initialise the missing tensors at random and load a model that only looks trained."""
        want_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        except RuntimeError as e:  # transformers reports shape mismatches as RuntimeError
            raise CheckpointError(f"weights in {args[0] if args else kwargs.get('pretrained_model_name_or_path')} do "
                                  f"not match its config.json ({' '.join(str(e).split())[:300]})") from e
        missing = sorted(set(info["missing_keys"]) - set(cls._tied_weights_keys))
        if missing:
            raise CheckpointError(f"weights in {args[0] if args else '?'} lack {len(missing)} of the model's tensors "
                                  f"({', '.join(missing[:4])}): the folder is incomplete or damaged; restore it or "
                                  "save the model again")
        return (model, info) if want_info else model

    @classmethod
    def from_hf(cls, model_or_path: Any, n_head: int | None = None) -> "GPT2LMModel":
        """Load a transformers `GPT2LMHeadModel`, its state dict (give `n_head` unless it is n_embd / 64),
        or a `save_pretrained` folder (or hub name) of one."""
        config, state_dict = hf_weights(model_or_path, n_head=n_head)
        # Built on the meta device and given the loaded tensors: no random init to throw away, and the global RNG
        # is left as it was, so a seeded run draws the same numbers whichever format its backbone came in.
        with torch.device("meta"):
            model = cls(config)
        missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
        missing = [k for k in missing if k != "lm_head.weight"]  # tied to wte
        if missing or unexpected:
            raise CheckpointError(f"checkpoint does not match GPT-2: missing {missing[:5]}, unexpected "
                                  f"{unexpected[:5]}; pass a GPT-2 model, folder or state dict")
        model.tie_weights()
        mark_loaded(model)
        return model

    def to_hf(self) -> Any:
        """This model as a transformers `GPT2LMHeadModel` with identical weights (and dtype; eval mode unless
        this model is training)."""
        hf = to_hf(self.config, self.state_dict())
        return hf.to(dtype=self.dtype).eval() if not self.training else hf


def mark_loaded(model: nn.Module) -> None:
    """Flag every module and tensor as holding loaded weights, as transformers' `from_pretrained` does: a
    `PreTrainedModel` built around this one (a task head) would otherwise re-initialise it in its `post_init`."""
    for module in model.modules():
        module._is_hf_initialized = True
        for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
            t._is_hf_initialized = True


def causal_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None
) -> torch.Tensor:
    """Next-token cross-entropy; -100 labels are ignored. With `num_items_in_batch` (the Trainer's gradient
    accumulation) the sum is divided by the tokens of the whole accumulated batch, not of this micro-batch."""
    # Shift the labels, not the logits: slicing (B, T, V) logits would copy them, the largest tensor of a step.
    shift_labels = F.pad(labels[:, 1:].to(logits.device), (0, 1), value=-100).reshape(-1)
    shift_logits = logits.reshape(-1, logits.shape[-1]).float()
    if num_items_in_batch is None:
        return F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
    total = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
    return total / num_items_in_batch


def _register_auto_model() -> None:
    """`AutoModelForCausalLM.from_pretrained` opens our folders (model_type "gpt2core"; `gpt2core.config` registers
    the config; gpt2core.auto_register says when this runs)."""
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.register(GPT2Config, GPT2LMModel, exist_ok=True)


_register_auto_model()
