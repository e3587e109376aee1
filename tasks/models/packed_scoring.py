"""Log-likelihoods of (context, continuation) token pairs with every context run once.

lm-evaluation-harness scores each pair as its own row, context + continuation, so a classification example with L
labels runs its context L times. Here the pairs that share a context become one packed row: the context, then each
continuation (less its last token) as a branch that sees the context and itself but no other branch, at the
positions it would have after the context. One forward pass scores them all, and the LM head runs only where a
continuation token is predicted (a tiny share of the positions in a zero-shot prompt). The sums equal per-pair
scoring up to float rounding (tests/test_packed_scoring.py) and do not depend on how rows are batched.

Written by hand: no library packs branches of a shared context into one causal row (lm-eval's logits cache
only merges requests whose context + continuation[:-1] are identical, i.e. one-token continuations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class PackedRow:
    """One context (after the shared prefix) and the continuations scored on it, as one row of token ids."""

    tokens: list[int]  # context suffix + each continuation[:-1]
    segments: list[int]  # 0: context, j + 1: branch of continuation j
    positions: list[int]  # position ids, counted from the end of the shared prefix
    targets: list[tuple[int, list[int], list[int]]]  # (request index, predicting indices, continuation ids)


def pack_rows(pairs: list[tuple[list[int], list[int]]], prefix_len: int, max_len: int) -> list[PackedRow]:
    """Pairs grouped by context (in order of first appearance), each context at least one token past the prefix.

    A row holds at most `max_len - prefix_len` tokens (the model's window after the prefix): a context whose
    branches do not fit together goes into more than one row."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, _) in enumerate(pairs):
        groups.setdefault(tuple(ctx[prefix_len:]), []).append(i)
    rows: list[PackedRow] = []
    for suffix, members in groups.items():
        row = None
        for i in members:
            cont = pairs[i][1]
            if row is None or len(row.tokens) + len(cont) - 1 > max_len - prefix_len:
                row = PackedRow(list(suffix), [0] * len(suffix), list(range(len(suffix))), [])
                rows.append(row)
            start, branch = len(row.tokens), len(row.targets) + 1
            # the first continuation token is predicted at the context's last position, the rest inside the branch
            row.targets.append((i, [len(suffix) - 1] + list(range(start, start + len(cont) - 1)), cont))
            row.tokens += cont[:-1]
            row.segments += [branch] * (len(cont) - 1)
            row.positions += range(len(suffix), len(suffix) + len(cont) - 1)
    return rows


def branch_mask(segments: torch.Tensor, prefix_len: int) -> torch.Tensor:
    """(B, 1, T, prefix + T) boolean attention mask of packed rows; `segments` (B, T) with -1 for padding.

    A token sees the shared prefix, the context up to itself and its own branch up to itself. A padding query
    sees only itself (SDPA would return NaN for a row that sees nothing); no real token sees padding."""
    B, T = segments.shape
    idx = torch.arange(T, device=segments.device)
    causal = idx[None, :] <= idx[:, None]  # (T, T): key <= query
    seg_q, seg_k = segments[:, :, None], segments[:, None, :]
    allowed = causal & ((seg_k == 0) | (seg_k == seg_q)) & (seg_q >= 0)
    allowed |= torch.eye(T, dtype=torch.bool, device=segments.device)
    prefix = torch.ones(B, T, prefix_len, dtype=torch.bool, device=segments.device)
    return torch.cat([prefix, allowed], dim=-1)[:, None]


def score_batch(model: Any, rows: list[PackedRow], pad_id: int, prefix_len: int, cache: Any,
                results: list[Any]) -> None:
    """Score one batch of packed rows into `results[request index] = (sum log p, is_greedy)`."""
    device = next(model.parameters()).device
    B, T = len(rows), max(len(r.tokens) for r in rows)
    inp = torch.full((B, T), pad_id, dtype=torch.long)
    seg = torch.full((B, T), -1, dtype=torch.long)
    pos = torch.zeros(B, T, dtype=torch.long)
    for j, r in enumerate(rows):
        n = len(r.tokens)
        inp[j, :n], seg[j, :n], pos[j, :n] = torch.tensor(r.tokens), torch.tensor(r.segments), torch.tensor(r.positions)
    kwargs: dict[str, Any] = {}
    if int(seg.max()) > 1:  # a row holds two branches or more: the packed mask and positions
        kwargs = {"attention_mask": branch_mask(seg, prefix_len).to(device), "position_ids": (pos + prefix_len).to(device)}
    # With one branch a row is a plain causal sequence (a perplexity window, a lone request): SDPA's causal kernel,
    # default positions, and right padding needs no mask, as causal attention never lets a real token see a pad.
    out = model(inp.to(device), past_key_values=cache, output_hidden_states=True, logits_to_keep=1, **kwargs)
    hidden = out.hidden_states[-1]  # (B, T, C), after the final LayerNorm
    requests = [(j, t) for j, r in enumerate(rows) for t in r.targets]  # (row, (request, where, continuation))
    row_of = torch.tensor([j for j, (_, where, _) in requests for _ in where], device=device)
    at = torch.tensor([p for _, (_, where, _) in requests for p in where], device=device)
    owner = torch.tensor([k for k, (_, (_, where, _)) in enumerate(requests) for _ in where], device=device)
    targets = torch.tensor([t for _, (_, _, cont) in requests for t in cont], device=device)
    picked = hidden[row_of, at]  # (N, C): only the positions that predict a continuation token
    logprobs = torch.log_softmax(model.get_output_embeddings()(picked).float(), dim=-1)  # (N, V)
    token_lp = logprobs.gather(-1, targets[:, None])[:, 0]
    sums = torch.zeros(len(requests), device=device).index_add_(0, owner, token_lp).tolist()
    misses = torch.zeros(len(requests), device=device).index_add_(
        0, owner, (logprobs.argmax(-1) != targets).float()).tolist()
    for k, (_, (i, _, _)) in enumerate(requests):
        results[i] = (sums[k], misses[k] == 0)
