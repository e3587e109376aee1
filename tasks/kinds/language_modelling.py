"""Language modelling: a split is one document (`format: text`), scored by the LM's rolling log-likelihood.

The text is read whole and scored in windows of `max_len` tokens advancing by `stride` (every token predicted
once, with >= max_len - stride tokens of context; the first token is conditioned on end-of-text). Reported:
- token_perplexity = exp(NLL / tokens)        (depends on the tokenizer)
- word_perplexity  = exp(NLL / words)         (words = whitespace-separated items of the text)
- bits_per_byte    = NLL / ln 2 / UTF-8 bytes (tokenizer-independent)
"""

from __future__ import annotations

import math
import time
from typing import Any

from tasks.data.spec import TaskSpec
from tasks.errors import DataError, TaskError
from tasks.kinds.base import TaskKind

SCORING = "rolling windows, first token conditioned on end-of-text"


def perplexity_from_nll(nll: float, n_tokens: int, n_words: int, n_bytes: int) -> dict[str, float]:
    return {"nll": nll, "token_perplexity": math.exp(nll / n_tokens), "word_perplexity": math.exp(nll / n_words),
            "bits_per_byte": nll / math.log(2) / n_bytes}


class LanguageModelling(TaskKind):
    name = "language_modelling"
    default_metrics = ("bits_per_byte", "token_perplexity", "word_perplexity")
    scores_text = True
    needs_train_split = False

    def validate(self, spec: TaskSpec) -> None:
        if spec.data.format != "text":
            raise TaskError("data.format: a language_modelling task reads whole documents: write 'format: text'")
        if spec.fields or spec.labels or spec.baselines:
            raise TaskError("a language_modelling task has no fields, labels or baselines")

    def score_text(self, lm: Any, text: str, max_len: int, stride: int) -> dict[str, Any]:
        """Perplexities, bits per byte and the counts behind them, for one document."""
        if not text.strip():
            raise DataError("nothing to score (empty text)")
        t0 = time.perf_counter()
        [logprob] = lm.loglikelihood_rolling([text], max_len=max_len, stride=stride)
        seconds = time.perf_counter() - t0
        n_tokens, n_words, n_bytes = lm.token_count(text), len(text.split()), len(text.encode("utf-8"))
        out: dict[str, Any] = perplexity_from_nll(-logprob, n_tokens, n_words, n_bytes)
        out.update({"max_len": max_len, "stride": stride, "tokens": n_tokens, "words": n_words, "bytes": n_bytes,
                    "chars": len(text), "eval_seconds": seconds})
        return out
