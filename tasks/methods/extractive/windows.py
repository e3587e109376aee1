"""Reading an article in windows that fit the backbone, scoring its sentences, and choosing the summary.

Each sentence is tokenized on its own (with a leading space after the first, as it reads in the article). Windows
are packed greedily with whole sentences up to `max_length` tokens; every sentence is scored in exactly one
window, at its last token. A window after the first starts with the preceding sentences that fit in
`context_tokens` (read as context, not scored), so a sentence rarely starts a window blind. A sentence longer than
a whole window keeps its first `max_length` tokens (and is scored at the last of them). So however long the
article, no sentence is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tasks.kinds.base import batches, pad


@dataclass
class Window:
    input_ids: list[int]
    positions: list[int]  # index in input_ids of each scored sentence's last token
    sentences: list[int]  # which sentences of the article (indices) those are


def sentence_ids(tokenizer: Any, sentences: Sequence[str]) -> list[list[int]]:
    texts = [(" " if i else "") + s for i, s in enumerate(sentences)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def windows(sent_ids: Sequence[Sequence[int]], max_length: int, context_tokens: int) -> list[Window]:
    """Windows of at most `max_length` tokens that score every sentence once (see the module docstring)."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    context_tokens = min(context_tokens, max_length // 2)
    out: list[Window] = []
    i, n = 0, len(sent_ids)
    while i < n:
        ctx: list[int] = []
        j = i
        while j > 0 and len(sent_ids[j - 1]) + len(ctx) <= context_tokens:
            j -= 1
            ctx = list(sent_ids[j]) + ctx
        if len(ctx) + len(sent_ids[i]) > max_length:
            ctx = []  # the first scored sentence comes first; context only where there is room
        w = Window(list(ctx), [], [])
        while i < n:
            s = list(sent_ids[i])[:max_length]
            if not s:
                raise ValueError(f"sentence {i} tokenizes to nothing; sentences must be stripped and non-empty")
            if w.positions and len(w.input_ids) + len(s) > max_length:
                break
            w.input_ids += s[:max_length - len(w.input_ids)]
            w.positions.append(len(w.input_ids) - 1)
            w.sentences.append(i)
            i += 1
        out.append(w)
    return out


def window_features(docs: Sequence[Sequence[Sequence[int]]], labels: Sequence[Sequence[int]] | None,
                    max_length: int, context_tokens: int) -> dict[str, list]:
    """Training features, one per window: input_ids, attention_mask, sentence_positions, labels (0/1 per slot)."""
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "sentence_positions": [], "labels": []}
    for d, sent_ids in enumerate(docs):
        for w in windows(sent_ids, max_length, context_tokens):
            out["input_ids"].append(w.input_ids)
            out["attention_mask"].append([1] * len(w.input_ids))
            out["sentence_positions"].append(w.positions)
            out["labels"].append([float(labels[d][s]) if labels is not None else -100.0 for s in w.sentences])
    return out


class WindowCollator:
    """Right-pads a batch of window features: ids with the pad token, positions with -1, labels with -100."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        T = max(len(f["input_ids"]) for f in features)
        S = max(len(f["sentence_positions"]) for f in features)

        def filled(key: str, width: int, value: float, dtype: Any) -> Any:
            rows = [list(f[key]) + [value] * (width - len(f[key])) for f in features]
            return torch.tensor(rows, dtype=dtype)

        return {"input_ids": filled("input_ids", T, self.pad_token_id, torch.long),
                "attention_mask": filled("attention_mask", T, 0, torch.long),
                "sentence_positions": filled("sentence_positions", S, -1, torch.long),
                "labels": filled("labels", S, -100.0, torch.float)}


def score_sentences(model: Any, tokenizer: Any, docs: Sequence[Sequence[Sequence[int]]], max_length: int,
                    context_tokens: int, batch_size: int) -> list[list[float]]:
    """The model's score for every sentence of every article (windows batched longest first)."""
    import torch

    flat: list[tuple[int, Window]] = [(d, w) for d, ids in enumerate(docs)
                                      for w in windows(ids, max_length, context_tokens)]
    scores = [[0.0] * len(ids) for ids in docs]
    device = next(model.parameters()).device
    with torch.inference_mode():
        for batch in batches([len(w.input_ids) for _, w in flat], batch_size):
            ids, mask = pad(tokenizer, [flat[k][1].input_ids for k in batch], "right", device)
            S = max(len(flat[k][1].positions) for k in batch)
            pos = torch.full((len(batch), S), -1, dtype=torch.long)
            for r, k in enumerate(batch):
                pos[r, :len(flat[k][1].positions)] = torch.tensor(flat[k][1].positions)
            logits = model(input_ids=ids, attention_mask=mask, sentence_positions=pos.to(device)).logits
            for r, k in enumerate(batch):
                d, w = flat[k]
                for slot, s in enumerate(w.sentences):
                    scores[d][s] = float(logits[r, slot])
    return scores


def select(scores: Sequence[float], k: int) -> list[int]:
    """The `k` best-scored sentences, in document order (ties go to the earlier sentence)."""
    best = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
    return sorted(best)
