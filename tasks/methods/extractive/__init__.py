"""Extractive summarization, as BertSum does it with BERT: score each sentence of the article with a small head
on the backbone and take the best ones in document order.

- `oracle`:  the sentence split, the greedy ROUGE-1+2 oracle that labels sentences, the length budget.
- `windows`: windows of whole sentences that fit the backbone, the features and collator, sentence scores.
- `run`:     `finetune_extractive(...)` (train, save, predict, record) and `evaluate_extractive(...)`.

torch and transformers are imported when a run starts; the head is `tasks.models.heads.GPT2ForSentenceScoring`.
"""

from tasks.methods.extractive.run import (METHODS, RECORD_PREFIX, ExtractiveSettings, applies, check_extractive,
                                          evaluate_extractive, finetune_extractive, split_overrides)

__all__ = ["METHODS", "RECORD_PREFIX", "ExtractiveSettings", "applies", "check_extractive", "evaluate_extractive",
           "finetune_extractive", "split_overrides"]
