"""Which sentences an extractive summary should take: the sentence split, the oracle labels and the length budget.

- Sentences: the suite's one regex split (`tasks.methods.baselines.split_sentences`, as lead-k uses): a break after
  `.`, `!` or `?` followed by whitespace and an upper-case letter, digit or quote. No model, no data download
  (nltk is installed but its punkt data is not).
- Oracle (BertSum's `greedy_selection`, with clipped n-gram counts): start from no sentence; repeatedly add the
  sentence that most raises ROUGE-1 F + ROUGE-2 F of the selection against the first reference; stop when no
  sentence raises it (or at `max_sentences`). The selection's n-grams are the sum of its sentences' n-grams (no
  bigram spans a sentence boundary); tokens are rouge-score's (lower case, alphanumeric, Porter stemmer), as the
  metric's. The oracle sentences get label 1, the others 0.
- Budget, learned on the training articles' oracles: `count` takes the median number of oracle sentences for every
  article; `ratio` takes the median share of an article's sentences that its oracle picks, times the article's
  number of sentences (rounded, at least 1).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tasks.errors import ConfigError
from tasks.methods.baselines import split_sentences

BUDGET_RULES = ("count", "ratio")

__all__ = ["BUDGET_RULES", "Budget", "learn_budget", "oracle", "split_sentences"]


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from rouge_score.tokenizers import DefaultTokenizer

    return DefaultTokenizer(use_stemmer=True)


def _grams(text: str) -> tuple[Counter, Counter]:
    toks = _tokenizer().tokenize(text)
    return Counter(toks), Counter(zip(toks, toks[1:]))


def _f(cand: Counter, ref: Counter) -> float:
    overlap = sum((cand & ref).values())
    if overlap == 0:
        return 0.0
    p, r = overlap / sum(cand.values()), overlap / sum(ref.values())
    return 2 * p * r / (p + r)


def oracle(sentences: Sequence[str], reference: str, max_sentences: int | None = None) -> list[int]:
    """Indices (in document order) of the greedy ROUGE-1+2 F oracle selection of `sentences` for `reference`."""
    ref1, ref2 = _grams(reference)
    grams = [_grams(s) for s in sentences]
    chosen: list[int] = []
    c1, c2 = Counter(), Counter()
    best = 0.0
    while max_sentences is None or len(chosen) < max_sentences:
        pick, pick_score = -1, best
        for i, (g1, g2) in enumerate(grams):
            if i in chosen:
                continue
            s = _f(c1 + g1, ref1) + _f(c2 + g2, ref2)
            if s > pick_score:
                pick, pick_score = i, s
        if pick < 0:
            break
        chosen.append(pick)
        c1, c2, best = c1 + grams[pick][0], c2 + grams[pick][1], pick_score
    return sorted(chosen)


@dataclass(frozen=True)
class Budget:
    """How many sentences a summary takes: `rule` count (`value` sentences) or ratio (`value` x the article's)."""

    rule: str
    value: float

    def sentences(self, n: int) -> int:
        if n == 0:
            return 0
        k = self.value if self.rule == "count" else self.value * n
        return min(n, max(1, int(round(k))))

    def describe(self) -> dict[str, Any]:
        return {"rule": self.rule, "value": self.value}


def learn_budget(rule: str, oracle_counts: Sequence[int], sentence_counts: Sequence[int]) -> Budget:
    """The budget `rule` learned from the training articles' oracle and sentence counts (medians)."""
    if rule not in BUDGET_RULES:
        raise ConfigError(f"budget: {rule!r} is not one of {', '.join(BUDGET_RULES)}")
    pairs = [(k, n) for k, n in zip(oracle_counts, sentence_counts) if n > 0]
    if not pairs:
        raise ConfigError("no training article has a sentence: the budget cannot be learned")
    if rule == "count":
        return Budget("count", float(statistics.median(k for k, _ in pairs)))
    return Budget("ratio", round(float(statistics.median(k / n for k, n in pairs)), 4))
