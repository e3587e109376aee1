"""The language-modelling row: WikiText-2 perplexity and bits per byte through `LM.loglikelihood_rolling`.

The text is the tokenised WikiText-2 (v1) file as published (`corpus/wikitext2/<split>.txt.gz`), read whole,
including its " @-@ " escapes and blank lines. It is scored as one document in windows of `max_len` tokens
advancing by `stride` (every token predicted once, with >= max_len - stride tokens of context; the first token
is conditioned on end-of-text). Reported:
- token_perplexity = exp(NLL / tokens)       (depends on the tokenizer; comparable between same-tokenizer models)
- word_perplexity  = exp(NLL / words)        (words = whitespace-separated items of the text)
- bits_per_byte    = NLL / ln 2 / UTF-8 bytes (tokenizer-independent)
"""

from __future__ import annotations

import gzip
import math
import os
import time
from pathlib import Path
from typing import Any

from tasks.lm_eval import LM


def wikitext2_path(split: str = "test", data_dir: str | os.PathLike | None = None) -> Path:
    from tasks.registry import data_dir as resolve

    root = resolve(data_dir)
    if root is None:
        raise FileNotFoundError("WikiText-2 needs the local data mirror: set GPT2SUITE_DATA_DIR")
    path = root / "corpus" / "wikitext2" / f"{split}.txt.gz"
    if not path.exists():
        raise FileNotFoundError(f"WikiText-2 {split!r} not found at {path}; set GPT2SUITE_DATA_DIR to the data mirror")
    return path


def perplexity_from_nll(nll: float, n_tokens: int, n_words: int, n_bytes: int) -> dict[str, float]:
    return {
        "nll": nll,
        "token_perplexity": math.exp(nll / n_tokens),
        "word_perplexity": math.exp(nll / n_words),
        "bits_per_byte": nll / math.log(2) / n_bytes,
    }


def evaluate_wikitext2(lm: LM, stride: int, max_len: int, split: str = "test", max_chars: int | None = None,
                       data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Perplexities and bits per byte of WikiText-2 `split` (the first `max_chars` characters if given)."""
    with gzip.open(wikitext2_path(split, data_dir), "rt", encoding="utf-8") as f:
        text = f.read()
    if max_chars is not None:
        text = text[:max_chars]
    if not text.strip():
        raise ValueError("WikiText-2: nothing to score (empty text)")
    t0 = time.perf_counter()
    [logprob] = lm.loglikelihood_rolling([text], max_len=max_len, stride=stride)
    seconds = time.perf_counter() - t0
    n_tokens = lm.token_count(text)
    out = perplexity_from_nll(-logprob, n_tokens, len(text.split()), len(text.encode("utf-8")))
    out.update({"split": split, "max_len": max_len, "stride": stride, "tokens": n_tokens,
                "words": len(text.split()), "bytes": len(text.encode("utf-8")), "chars": len(text),
                "eval_seconds": seconds})
    return out


def write_perplexity_run(result: dict[str, Any], model_path: str, runs_dir: Any = None,
                         total_params: int | None = None) -> Path:
    """A run record for the wikitext2 row (task 'wikitext2' is not a TaskSpec, so the record is built here)."""
    from types import SimpleNamespace

    from tasks.records import DEFAULT_RUNS_DIR, make_record, peak_memory_mb, record_name, write_record

    pseudo_task = SimpleNamespace(name="wikitext2", version="1")
    metrics = {k: result[k] for k in ("token_perplexity", "word_perplexity", "bits_per_byte")}
    config = {k: result[k] for k in ("split", "max_len", "stride", "chars")}
    config["scoring"] = "rolling windows, first token conditioned on end-of-text"
    record = make_record(task=pseudo_task, method="perplexity", model_path=model_path, split=result["split"],
                         n_examples=1, metrics=metrics, predictions=None, seed=None, config=config,
                         total_params=total_params, eval_seconds=result["eval_seconds"],
                         peak_memory_mb=peak_memory_mb(), tokens_seen=result["tokens"],
                         extra={"counts": {k: result[k] for k in ("nll", "tokens", "words", "bytes")}})
    out_dir = Path(runs_dir or DEFAULT_RUNS_DIR)
    return write_record(record, out_dir / record_name(record))
