"""One evaluation interface for language models, in the spirit of lm-evaluation-harness.

Every prompted task is scored through three calls:
- `loglikelihood([(context, continuation), ...])` -> `[(sum log p(continuation | context), is_greedy), ...]`
- `loglikelihood_rolling([text, ...], max_len, stride)` -> `[sum log p(text), ...]` (perplexity)
- `generate_until([(context, {"until": [...], "max_gen_toks": N}), ...])` -> `[continuation, ...]`

`GPT2LM` runs a `GPT2LMModel`; `DummyLM` fakes deterministic scores and generations so the whole pipeline runs
in tests without a model. Scores never depend on batch size: requests are sorted by length, batched, and
returned in the caller's order; the longest token prefix that all contexts of a call share (the k-shot demos)
is run once and its keys/values are copied into every batch's cache, and the continuations of one context (the
labels of a classification example) are scored in one packed row, so each context runs once.
"""

from __future__ import annotations

import hashlib
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from tasks.errors import ConfigError, DataError

GenRequest = tuple[str, dict[str, Any]]


class LM(ABC):
    """What a task may ask of a language model. `max_length` is the longest token sequence it can read."""

    max_length: int

    @abstractmethod
    def token_count(self, text: str) -> int:
        """Number of tokens `text` encodes to (for fitting prompts into `max_length`)."""

    @abstractmethod
    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        """(sum of log-probabilities of the continuation's tokens given the context, whether greedy decoding
        from the context would produce exactly the continuation), per request."""

    @abstractmethod
    def loglikelihood_rolling(self, texts: list[str], max_len: int | None = None,
                              stride: int | None = None) -> list[float]:
        """Sum log-probability of every token of each text (the first token is conditioned on end-of-text),
        read in windows of `max_len` tokens that advance by `stride` tokens: each token is predicted once,
        with at least `max_len - stride` tokens of context once the text is that long."""

    @abstractmethod
    def generate_until(self, requests: list[GenRequest]) -> list[str]:
        """Greedy continuation of each context, cut before the first `until` string, at most `max_gen_toks`
        tokens."""


def _cut_at_stop(text: str, until: Sequence[str]) -> str:
    cut = min((text.find(s) for s in until if s and s in text), default=-1)
    return text if cut < 0 else text[:cut]


def _gen_args(kwargs: dict[str, Any]) -> tuple[list[str], int]:
    until = kwargs.get("until", ["\n"])
    until = [until] if isinstance(until, str) else list(until)
    unknown = set(kwargs) - {"until", "max_gen_toks"}
    if unknown:
        raise ConfigError(f"generate_until: unsupported generation arguments {sorted(unknown)}")
    return until, int(kwargs.get("max_gen_toks", 32))


def rolling_windows(n_tokens: int, max_len: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows over ids = [EOT] + tokens (length n_tokens + 1) that predict each of positions 1..n_tokens
    once: (input_start, first_target, end) means input ids[input_start:end - 1] scores targets
    ids[first_target:end]. Inputs hold at most `max_len` tokens."""
    if not 0 < stride <= max_len:
        raise ConfigError(f"stride must be in [1, max_len={max_len}], got {stride}")
    windows = []
    first = 1
    while first <= n_tokens:
        end = min(first + stride, n_tokens + 1)
        windows.append((max(0, end - 1 - max_len), first, end))
        first = end
    return windows


# ---- the real model ------------------------------------------------------------------------------------


class GPT2LM(LM):
    """A `GPT2LMModel` + its tokenizer behind the evaluation interface.

    `batch_size` bounds the rows of one forward pass. Contexts and continuations are encoded separately
    (continuation tokens never merge with the context's last token, so every label is scored on the same
    context tokens). An empty context is replaced by the end-of-text token.
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, device: str | None = None,
                 share_prefix: bool = True, min_shared_prefix: int = 8) -> None:
        import torch

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.max_length = int(model.config.n_positions)
        self.eot = int(model.config.eos_token_id)
        self.share_prefix = share_prefix
        self.min_shared_prefix = min_shared_prefix  # below this, copying the cache costs more than it saves
        self.progress = False  # a tqdm bar over scoring batches (the perplexity command turns it on)

    @classmethod
    def from_path(cls, path: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
                  device: str | None = None, **kwargs: Any) -> "GPT2LM":
        """The model of a folder on `device` (default: the GPU when there is one, as fine-tuning trains there)."""
        import torch

        from gpt2core.checkpoint import load_model
        from gpt2core.tokenizer import load_tokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(load_model(path, device=device), load_tokenizer(tokenizer or path), device=device, **kwargs)

    # -- tokens
    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    def token_count(self, text: str) -> int:
        return len(self.encode(text))

    # -- scoring
    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        contexts = self.encode_batch([c for c, _ in requests])
        conts = self.encode_batch([c for _, c in requests])
        pairs = []
        for (ctx_text, cont_text), ctx, cont in zip(requests, contexts, conts):
            if not cont:
                raise DataError(f"loglikelihood: empty continuation {cont_text!r} for context {ctx_text[-40:]!r}")
            pairs.append((ctx or [self.eot], cont))
        return self.score_tokens(pairs)

    def loglikelihood_rolling(self, texts: list[str], max_len: int | None = None,
                              stride: int | None = None) -> list[float]:
        max_len = max_len or self.max_length
        stride = stride or max_len
        if max_len > self.max_length:
            raise ConfigError(f"max_len={max_len} exceeds the model's n_positions={self.max_length}")
        pairs, owner = [], []
        for i, ids in enumerate(self.encode_batch(texts)):
            ids = [self.eot] + ids
            for start, first, end in rolling_windows(len(ids) - 1, max_len, stride):
                # Context = the window's tokens before its first target; continuation = its targets.
                pairs.append((ids[start:first], ids[first:end]))
                owner.append(i)
        totals = [0.0] * len(texts)
        for i, (lp, _) in zip(owner, self.score_tokens(pairs, share_prefix=False)):
            totals[i] += lp
        return totals

    def score_tokens(self, pairs: list[tuple[list[int], list[int]]],
                     share_prefix: bool | None = None) -> list[tuple[float, bool]]:
        """loglikelihood on token ids: (context ids, continuation ids) pairs; contexts must be non-empty."""
        import torch

        if not pairs:
            return []
        for ctx, cont in pairs:
            if len(ctx) + len(cont) - 1 > self.max_length:
                raise DataError(
                    f"a request of {len(ctx)} context + {len(cont)} continuation tokens exceeds the model's "
                    f"n_positions={self.max_length}; shorten the prompt (fewer demonstrations, a truncated input)"
                )
        share = self.share_prefix if share_prefix is None else share_prefix
        # The shared prefix leaves every row at least one context token, so each row's first continuation
        # token is predicted from that row's own forward pass.
        p = _common_prefix_len([ctx for ctx, _ in pairs]) if share and len(pairs) > 1 else 0
        p = min(p, min(len(ctx) for ctx, _ in pairs) - 1)
        prefix = pairs[0][0][:p] if p >= self.min_shared_prefix else []
        prefix_kv = self._prefix_cache(prefix)

        from tasks.models.packed_scoring import pack_rows, score_batch  # torch-bound, like the imports above

        # Pairs that share a context are one packed row (tasks/models/packed_scoring.py): each context runs once.
        rows = pack_rows(pairs, len(prefix), self.max_length)
        # Longest first (as lm-evaluation-harness), so a too-long batch fails at once and padding stays small.
        rows.sort(key=lambda r: -len(r.tokens))
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        from tqdm.auto import tqdm

        starts = range(0, len(rows), self.batch_size)
        with torch.inference_mode():
            for b in tqdm(starts, desc="scoring", unit="batch", disable=not self.progress or len(starts) < 2):
                batch = rows[b:b + self.batch_size]
                width = max(len(r.tokens) for r in batch)
                cache = self._new_cache(len(batch), prefix_kv, len(prefix), width) if prefix_kv is not None else None
                score_batch(self.model, batch, self.eot, len(prefix), cache, results)
        return results  # type: ignore[return-value]

    def _prefix_cache(self, prefix: list[int]) -> list[tuple[Any, Any]] | None:
        """Per-layer (keys, values) of the shared prefix, each (1, n_head, P, head_dim); None when empty."""
        import torch

        from gpt2core.model import KVCache

        if not prefix:
            return None
        cache = KVCache(self.model.config, 1, len(prefix), self.model.dtype, self.device)
        with torch.inference_mode():
            self.model(torch.tensor([prefix], device=self.device), past_key_values=cache, logits_to_keep=1)
        return [(cache.keys[i], cache.values[i]) for i in range(self.model.config.n_layer)]

    def _new_cache(self, batch: int, prefix_kv: list[tuple[Any, Any]] | None, prefix_len: int, more: int) -> Any:
        from gpt2core.model import KVCache

        cache = KVCache(self.model.config, batch, prefix_len + more, self.model.dtype, self.device)
        if prefix_kv is not None:
            for layer, (k, v) in enumerate(prefix_kv):
                cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), layer)  # (B, nh, P, hs)
        return cache

    # -- generation
    def generate_until(self, requests: list[GenRequest]) -> list[str]:
        import torch

        if not requests:
            return []
        contexts = [ids or [self.eot] for ids in self.encode_batch([c for c, _ in requests])]
        args = [_gen_args(kw) for _, kw in requests]
        for ctx, (_, max_gen) in zip(contexts, args):
            if len(ctx) + max_gen > self.max_length:
                raise DataError(
                    f"a prompt of {len(ctx)} tokens + max_gen_toks={max_gen} exceeds the model's "
                    f"n_positions={self.max_length}; shorten the prompt"
                )
        p = _common_prefix_len(contexts) if self.share_prefix and len(contexts) > 1 else 0
        p = min(p, min(len(c) for c in contexts) - 1)
        prefix = contexts[0][:p] if p >= self.min_shared_prefix else []
        prefix_kv = self._prefix_cache(prefix)
        order = sorted(range(len(requests)), key=lambda i: -len(contexts[i]))
        out: list[str] = [""] * len(requests)
        with torch.inference_mode():
            for b in range(0, len(order), self.batch_size):
                idx = order[b:b + self.batch_size]
                texts = self._greedy([contexts[i][len(prefix):] for i in idx], [args[i] for i in idx],
                                     prefix_kv, len(prefix))
                for i, t in zip(idx, texts):
                    out[i] = t
        return out

    def _greedy(self, suffixes: list[list[int]], args: list[tuple[list[str], int]],
                prefix_kv: list[tuple[Any, Any]] | None, prefix_len: int) -> list[str]:
        """Greedy decoding of left-padded suffixes after the cached prefix; a row stops at EOT, at a stop
        string, or after its max_gen_toks tokens."""
        import torch

        B, S = len(suffixes), max(len(s) for s in suffixes)
        max_gen = max(m for _, m in args)
        inp = torch.full((B, S), self.eot, dtype=torch.long)
        mask = torch.zeros(B, prefix_len + S + max_gen, dtype=torch.long)
        mask[:, :prefix_len] = 1
        mask[:, prefix_len + S:] = 1  # generated tokens
        for j, s in enumerate(suffixes):
            inp[j, S - len(s):] = torch.tensor(s)
            mask[j, prefix_len + S - len(s):] = 1
        mask = mask.to(self.device)
        positions = (mask[:, :prefix_len + S].cumsum(-1) - 1).clamp(min=0)
        cache = self._new_cache(B, prefix_kv, prefix_len, S + max_gen)
        generated: list[list[int]] = [[] for _ in range(B)]
        done = [False] * B
        step_ids, step_pos, length = inp.to(self.device), positions[:, prefix_len:], prefix_len + S
        for step in range(max_gen):
            logits = self.model(step_ids, past_key_values=cache, attention_mask=mask[:, :length],
                                position_ids=step_pos, logits_to_keep=1).logits[:, -1]
            next_ids = logits.argmax(-1)
            for j in range(B):
                if done[j]:
                    continue
                tok = int(next_ids[j])
                until, row_max = args[j]
                if tok == self.eot:
                    done[j] = True
                    continue
                generated[j].append(tok)
                if len(generated[j]) >= row_max or any(s in self.tokenizer.decode(generated[j]) for s in until):
                    done[j] = True
            if all(done):
                break
            step_ids, step_pos, length = next_ids[:, None], step_pos[:, -1:] + 1, length + 1
        return [_cut_at_stop(self.tokenizer.decode(g), a[0]) for g, a in zip(generated, args)]


def _common_prefix_len(seqs: list[list[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
        if n == 0:
            break
    return n


# ---- a fake model for tests ------------------------------------------------------------------------------


def _unit(*parts: str) -> float:
    """A deterministic number in [0, 1) from strings (sha256: stable across processes, unlike hash())."""
    h = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2**64


class DummyLM(LM):
    """Deterministic fake scores and generations; no model, no network.

    A "token" is 4 UTF-8 bytes (rounded up). The log-likelihood of a continuation is -(tokens) x a
    pseudo-random number in [0.5, 1.5) seeded by the last 200 characters of the context and the continuation,
    plus `bias(continuation)`; `score_fn(context, continuation)`, when given, replaces the whole rule.
    Generation returns a few words of the context's last paragraph (so extractive tasks score above zero),
    cut before the first stop string.
    """

    def __init__(self, max_length: int = 1024, bias: dict[str, float] | None = None,
                 score_fn: Callable[[str, str], float] | None = None) -> None:
        self.max_length = max_length
        self.bias = dict(bias or {})
        self.score_fn = score_fn
        self.calls: dict[str, int] = {"loglikelihood": 0, "loglikelihood_rolling": 0, "generate_until": 0}

    def token_count(self, text: str) -> int:
        return math.ceil(len(text.encode("utf-8")) / 4)

    def _check_len(self, n: int) -> None:
        if n > self.max_length:
            raise DataError(f"a request of {n} tokens exceeds the model's n_positions={self.max_length}")

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        self.calls["loglikelihood"] += 1
        out = []
        for ctx, cont in requests:
            self._check_len(self.token_count(ctx) + self.token_count(cont))
            if self.score_fn is not None:
                lp = float(self.score_fn(ctx, cont))
            else:
                lp = -self.token_count(cont) * (0.5 + _unit(ctx[-200:], cont)) + self.bias.get(cont.strip(), 0.0)
            out.append((lp, _unit("greedy", ctx[-200:], cont) < 0.5))
        return out

    def loglikelihood_rolling(self, texts: list[str], max_len: int | None = None,
                              stride: int | None = None) -> list[float]:
        self.calls["loglikelihood_rolling"] += 1
        # Every token costs between 1 and 3 nats, seeded by the text: finite, reproducible perplexities.
        return [-self.token_count(t) * (1.0 + 2.0 * _unit("rolling", t[:200])) for t in texts]

    def generate_until(self, requests: list[GenRequest]) -> list[str]:
        self.calls["generate_until"] += 1
        out = []
        for ctx, kwargs in requests:
            until, max_gen = _gen_args(kwargs)
            self._check_len(self.token_count(ctx) + max_gen)
            words = ctx.split("\n\n")[-1].split()
            start = int(_unit("gen", ctx[-200:]) * max(1, len(words) - 3))
            text = " " + " ".join(words[start:start + 3])
            out.append(_cut_at_stop(text, until))
        return out
