"""Fast autoregressive generation for `GPT2LMModel`: preallocated KV cache, batched left-padded prompts,
greedy / temperature / top-k / top-p sampling with a seed, EOS and stop strings, and transformers' two guards
against repetition loops (`no_repeat_ngram_size`, `repetition_penalty`), token for token as transformers applies them.

Written by hand because this loop is one of the project's fast paths: transformers' `generate` spends more
time per step on its bookkeeping than a small GPT-2 spends computing (see bench/generate.py).

`model` is a `gpt2core.model.GPT2LMModel` (its `generate` calls this loop); this module sits below the model
and reads it only through its attributes, so it does not import it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2core.errors import ModelInputError
from gpt2core.kv_cache import KVCache

FAST_GENERATE_ARGS = frozenset(
    {
        "input_ids",
        "attention_mask",
        "max_new_tokens",
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "seed",
        "eos_token_id",
        "pad_token_id",
        "stop_strings",
        "tokenizer",
        "no_repeat_ngram_size",
        "repetition_penalty",
    }
)


class DecodeStep:
    """One decoding step (a token per row) through the plain model, from weights laid out for it.

    For a few rows a linear layer is a matrix-vector product bound by reading its weights. MKL runs one row about
    1.4x faster against an `(in, out)` contiguous matrix than against `nn.Linear`'s `(out, in)` one read
    transposed, while for several rows it runs `(out, in) @ rows^T` faster (it splits the long side over the
    threads: 1.3-2x for the 25 matrices of `mini` at 8 rows on 2 AVX2 cores, the LM head up to 2.7x), so the step
    keeps both. The `(in, out)` copies are made per `generate` call (a few ms), so they always match the current
    weights. Calling functions directly skips the module machinery. Used only when every block is our plain
    module (`model.has_plain_layers()`): a wrapped layer (LoRA, ...) keeps the module path, which honours it.
    """

    def __init__(self, model: nn.Module):
        t = model.transformer
        self.wte, self.wpe, self.ln_f = t.wte.weight, t.wpe.weight, t.ln_f
        self.head = (model.lm_head.weight.t().contiguous(), model.lm_head.weight, None)
        self.n_head = model.config.n_head
        self.layers = [
            (b.ln_1, b.ln_2, *((lin.weight.t().contiguous(), lin.weight, lin.bias)
                               for lin in (b.attn.c_attn, b.attn.c_proj, b.mlp.c_fc, b.mlp.c_proj)))
            for b in t.h
        ]

    @staticmethod
    def _linear(x: torch.Tensor, layer: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
        in_out, out_in, bias = layer
        if x.shape[0] == 1:
            return x @ in_out if bias is None else torch.addmm(bias, x, in_out)
        if bias is None:
            return (out_in @ x.t()).t()
        return torch.addmm(bias[:, None], out_in, x.t()).t()  # (B, out), a transposed view

    def __call__(self, ids: torch.Tensor, pos: torch.Tensor, cache: KVCache, mask: torch.Tensor | None) -> torch.Tensor:
        """Logits (B, V) for next tokens `ids` (B,) at positions `pos` (B,); `mask` (B, 1, 1, past + 1) or None."""
        x = F.embedding(ids, self.wte) + F.embedding(pos, self.wpe)  # (B, C)
        B, C = x.shape
        H = self.n_head
        for i, (ln_1, ln_2, attn, proj, fc, fc_proj) in enumerate(self.layers):
            h = F.layer_norm(x, (C,), ln_1.weight, ln_1.bias, ln_1.eps)
            qkv = self._linear(h, attn).contiguous().view(B, 3, H, 1, C // H)  # SDPA's fast kernel wants unit strides
            # keys and values go into the cache with one copy: (2, B, nh, hs)
            k, v = cache.write_step(qkv[:, 1:, :, 0].transpose(0, 1), i)
            y = F.scaled_dot_product_attention(qkv[:, 0], k, v, attn_mask=mask)  # (B, nh, 1, hs)
            x = x + self._linear(y.view(B, C), proj)
            h = F.layer_norm(x, (C,), ln_2.weight, ln_2.bias, ln_2.eps)
            x = x + self._linear(F.gelu(self._linear(h, fc), approximate="tanh"), fc_proj)
        x = F.layer_norm(x, (C,), self.ln_f.weight, self.ln_f.bias, self.ln_f.eps)
        return self._linear(x, self.head)


def sample_next(
    logits: torch.Tensor,
    do_sample: bool,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, V)."""
    if not do_sample or temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already reach top_p; the most likely token always stays.
        drop_sorted = (cum - sorted_logits.softmax(dim=-1)) >= top_p
        logits = logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def guard_repeats(logits: torch.Tensor, seqs: torch.Tensor, start: torch.Tensor | None, no_repeat_ngram_size: int,
                  repetition_penalty: float) -> torch.Tensor:
    """Next-token logits (B, V) with transformers' `RepetitionPenaltyLogitsProcessor` and
    `NoRepeatNGramLogitsProcessor` applied, in that order, to the rows so far `seqs` (B, L), prompt included.

    The penalty divides a positive logit (multiplies a negative one) of every token that occurs in a row at or
    after `start` (B,), its first real token (left padding is skipped, as transformers does); the n-gram guard bans
    every token that would complete an n-gram already in the row (padding included, as transformers does)."""
    B, L = seqs.shape
    V = logits.shape[-1]
    if repetition_penalty != 1.0:
        ids = seqs.clamp(max=V)
        if start is not None:  # left padding goes to a spare column past the vocabulary
            ids = ids.masked_fill(torch.arange(L, device=seqs.device)[None] < start[:, None], V)
        padded = F.pad(logits, (0, 1))
        seen = padded.gather(1, ids)  # (B, L): only the tokens that occur are touched
        padded = padded.scatter(1, ids, torch.where(seen < 0, seen * repetition_penalty, seen / repetition_penalty))
        logits = padded[:, :V]
    n = no_repeat_ngram_size
    if n and L >= n:
        prefix = seqs[:, L + 1 - n:]  # (B, n - 1): the n-gram the next token would complete starts with it
        windows = seqs.unfold(1, n, 1)  # (B, L - n + 1, n)
        matches = (windows[..., :-1] == prefix[:, None]).all(dim=-1)
        banned = torch.zeros(B, V + 1, dtype=torch.bool, device=logits.device)
        banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=V), V), True)
        logits = logits.masked_fill(banned[:, :V], float("-inf"))
    return logits


def _whole(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_arguments(max_new_tokens: int | None = None, temperature: float | None = None, top_k: int | None = None,
                    top_p: float | None = None, no_repeat_ngram_size: int | None = None,
                    repetition_penalty: float | None = None) -> None:
    """Refuse generation arguments that make no sense (None: not given). `not x >= 0` also catches NaN."""
    if max_new_tokens is not None and not (_whole(max_new_tokens) and max_new_tokens >= 0):
        raise ModelInputError(f"max_new_tokens must be a whole number, 0 or more, got {max_new_tokens!r}")
    if temperature is not None and not (temperature >= 0 and math.isfinite(temperature)):
        raise ModelInputError(f"temperature must be 0 (greedy) or a finite positive number, got {temperature}")
    if top_k is not None and not (_whole(top_k) and top_k >= 0):
        raise ModelInputError(f"top_k must be 0 (no top-k cut) or more, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ModelInputError(f"top_p must lie in (0, 1] (1: no nucleus cut), got {top_p}")
    if no_repeat_ngram_size is not None and not (_whole(no_repeat_ngram_size) and no_repeat_ngram_size >= 0):
        raise ModelInputError(f"no_repeat_ngram_size must be 0 (no guard) or more, got {no_repeat_ngram_size!r}")
    if repetition_penalty is not None and not (repetition_penalty > 0 and math.isfinite(repetition_penalty)):
        raise ModelInputError(f"repetition_penalty must be a finite positive number (1: none), got "
                              f"{repetition_penalty}")


def _as_set(ids: int | list[int] | None) -> set[int]:
    if ids is None:
        return set()
    return {ids} if isinstance(ids, int) else set(ids)


@torch.inference_mode()
def generate(
    model: nn.Module,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    stop_strings: str | list[str] | None = None,
    tokenizer: Any = None,
    no_repeat_ngram_size: int | None = 0,
    repetition_penalty: float | None = 1.0,
) -> torch.LongTensor:
    """Prompt + continuation ids, shape (B, T + n) with n <= max_new_tokens, like transformers' `generate`.

    Prompts of different lengths are left-padded with `attention_mask` marking real tokens. A row stops at
    its EOS token or once its continuation contains a stop string (kept, as in transformers); finished rows
    are filled with `pad_token_id`. Greedy unless `do_sample`; sampling is reproducible with `seed`.
    `no_repeat_ngram_size` / `repetition_penalty` (0 / 1 or None: off) act as in transformers (`guard_repeats`).
    """
    config = model.config
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.is_floating_point():
        raise ModelInputError(f"input_ids must be integer token ids shaped (batch, tokens), got {input_ids.dtype} of "
                              f"shape {list(input_ids.shape)}")
    B, T = input_ids.shape
    if T == 0:
        raise ModelInputError("generate needs a prompt of at least one token (an empty prompt: pass the EOS id)")
    check_arguments(max_new_tokens, temperature, top_k, top_p, no_repeat_ngram_size, repetition_penalty)
    no_repeat_ngram_size = no_repeat_ngram_size or 0
    repetition_penalty = 1.0 if repetition_penalty is None else float(repetition_penalty)
    guarded = no_repeat_ngram_size > 0 or repetition_penalty != 1.0
    if attention_mask is not None and attention_mask.dim() == 1:
        attention_mask = attention_mask[None]
    if attention_mask is not None and tuple(attention_mask.shape) != (B, T):
        raise ModelInputError(f"attention_mask must have the shape of input_ids, {[B, T]}, got "
                              f"{list(attention_mask.shape)}")
    if T + max_new_tokens > config.n_positions:
        raise ModelInputError(
            f"prompt ({T} tokens) + max_new_tokens ({max_new_tokens}) exceeds n_positions={config.n_positions}; "
            "shorten the prompt or ask for fewer tokens"
        )
    if stop_strings and tokenizer is None:
        raise ModelInputError("stop_strings need the tokenizer to decode the continuation: pass tokenizer=...")
    stop_strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings or [])
    eos = _as_set(config.eos_token_id if eos_token_id is None else eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (config.pad_token_id if config.pad_token_id is not None else 0)
    device = input_ids.device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None

    was_training = model.training
    model.eval()
    cache = KVCache(config, B, T + max_new_tokens, model.dtype, device)
    padded = attention_mask is not None and not bool(attention_mask.all())
    mask = None
    if padded:
        mask = torch.ones(B, T + max_new_tokens, dtype=torch.long, device=device)
        mask[:, :T] = attention_mask
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    else:
        positions = torch.arange(T, device=device)[None].expand(B, T)

    out = torch.full((B, T + max_new_tokens), pad, dtype=torch.long, device=device)
    out[:, :T] = input_ids
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    eos_tensor = torch.tensor(sorted(eos), device=device) if eos else None
    decode = DecodeStep(model) if model.has_plain_layers() and max_new_tokens > 1 else None
    # transformers' repetition penalty skips a row's left padding: from its first nonzero mask position on
    first_real = attention_mask.ne(0).int().argmax(dim=1) if attention_mask is not None else None
    step_ids, step_pos, length = input_ids, positions, T
    for step in range(max_new_tokens):
        if step > 0 and decode is not None:
            step_mask = mask[:, None, None, :length].bool() if padded else None
            logits = decode(step_ids[:, 0], step_pos[:, 0], cache, step_mask)
        else:
            logits = model(
                step_ids,
                past_key_values=cache,
                attention_mask=mask[:, :length] if padded else None,
                position_ids=step_pos,
                logits_to_keep=1,
            ).logits[:, -1]
        if guarded:
            logits = guard_repeats(logits, out[:, :length], first_real, no_repeat_ngram_size, repetition_penalty)
        next_ids = sample_next(logits, do_sample, temperature, top_k, top_p, generator)
        next_ids = torch.where(finished, torch.full_like(next_ids, pad), next_ids)
        out[:, length] = next_ids
        length += 1
        if eos_tensor is not None:
            finished |= torch.isin(next_ids, eos_tensor)
        if stop_strings:
            for row in range(B):
                if not finished[row]:
                    text = tokenizer.decode(out[row, T:length].tolist())
                    finished[row] = any(s in text for s in stop_strings)
        if bool(finished.all()):
            break
        step_ids = next_ids[:, None]
        step_pos = step_pos[:, -1:] + 1
    model.train(was_training)
    return out[:, :length]
