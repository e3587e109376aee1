"""Held-out perplexity with strided rolling windows, and bits per UTF-8 byte."""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from gpt2core.errors import ConfigError, CorpusError
from gpt2core.pretrain.corpus import read_text


@torch.no_grad()
def evaluate_perplexity(
    model: Any,
    tokenizer: Any,
    path: str | os.PathLike,
    seq_len: int,
    stride: int | None = None,
    *,
    batch_size: int = 8,
    max_chars: int | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Perplexity of a text file under `model`, scoring every token once.

    The text (read whole, `.txt` or `.txt.gz`) is preceded by `<|endoftext|>` so the first token is scored too.
    Windows of `seq_len` tokens start every `stride` tokens; each scores only the tokens the previous window did
    not, with up to `seq_len - stride` tokens of context. Returns tokens, nll (mean per token, nats), ppl,
    bytes (UTF-8 bytes of the text) and bpb (bits per byte = total nll / ln 2 / bytes), which compares across
    tokenizers.
    """
    stride = stride or seq_len // 2
    if not 0 < stride <= seq_len:
        raise ConfigError(f"stride must lie in [1, seq_len={seq_len}], got {stride}; set ppl_eval_stride within it")
    text = read_text(path, max_chars)
    if not text.strip():
        raise CorpusError(f"{path} holds no text to evaluate; point ppl_eval at a text file")
    ids = [tokenizer.eos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    data = torch.tensor(ids, dtype=torch.long)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()

    # (start, end, n_new): the window data[start:end] scores its last n_new targets.
    windows, prev_end = [], 1
    for start in range(0, len(ids) - 1, stride):
        end = min(start + seq_len + 1, len(ids))
        windows.append((start, end, end - prev_end))
        prev_end = end
        if end == len(ids):
            break
    total_nll, total_tokens = 0.0, 0
    autocast = torch.autocast(device.type, dtype=dtype) if dtype not in (None, torch.float32) else nullcontext()
    for i in range(0, len(windows), batch_size):
        group = windows[i:i + batch_size]
        width = max(end - start for start, end, _ in group)
        x = torch.full((len(group), width - 1), tokenizer.eos_token_id, dtype=torch.long)
        y = torch.full((len(group), width - 1), -100, dtype=torch.long)
        for row, (start, end, n_new) in enumerate(group):
            chunk = data[start:end]
            x[row, : len(chunk) - 1] = chunk[:-1]
            y[row, len(chunk) - 1 - n_new: len(chunk) - 1] = chunk[-n_new:]
        with autocast:
            logits = model(input_ids=x.to(device)).logits
        nll = F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(), ignore_index=-100,
                              reduction="sum")
        total_nll += float(nll)
        total_tokens += int((y != -100).sum())
    model.train(was_training)
    n_bytes = len(text.encode("utf-8"))
    mean = total_nll / total_tokens
    return {"tokens": total_tokens, "nll": mean, "ppl": math.exp(min(mean, 700.0)), "bytes": n_bytes,
            "bpb": total_nll / math.log(2) / n_bytes}

