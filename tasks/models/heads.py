"""Task heads on the GPT-2 backbone: sequence classification, extractive QA and sentence scoring (extractive
summarization).

A head is the backbone (`GPT2LMModel`, kept whole as `self.backbone`) plus one small module, as in transformers'
`GPT2ForSequenceClassification` / `GPT2ForQuestionAnswering`. The head reads the backbone's last hidden state
through its public forward (`output_hidden_states=True`; `logits_to_keep=1` so the unused LM logits cost one
position), so left or right padding, `inputs_embeds` (prompt tuning) and a prefix cache (prefix tuning) all work
the way the backbone handles them.

Heads are `PreTrainedModel`s, so `save_pretrained` / `from_pretrained`, the Trainer and PEFT (`modules_to_save`
names `score` and `qa_outputs`, PEFT's defaults for SEQ_CLS and QUESTION_ANS; `sentence_score` is named
explicitly) work on them unchanged.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import ModelOutput

from gpt2core.config import GPT2Config
from gpt2core.model import GPT2LMModel, mark_loaded


@dataclass
class ClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, num_labels)


@dataclass
class SpanOutput(ModelOutput):
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None  # (B, T)
    end_logits: torch.Tensor | None = None  # (B, T)


@dataclass
class SentenceScoreOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, S): one score per sentence slot; padded slots hold -inf


class GPT2HeadModel(PreTrainedModel):
    """The backbone plus a head; subclasses define `_build_head` and `forward`."""

    config_class = GPT2Config
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]
    _supports_sdpa = True
    _tied_weights_keys = {"backbone.lm_head.weight": "backbone.transformer.wte.weight"}

    def __init__(self, config: GPT2Config, backbone: GPT2LMModel | None = None):
        super().__init__(config)
        if backbone is not None:
            mark_loaded(backbone)  # trained weights: post_init below must not re-initialise them, however loaded
        self.backbone = backbone if backbone is not None else GPT2LMModel(config)
        self._build_head(config)
        # Positions at the start of the sequence that are not input tokens: PEFT's prompt tuning prepends its
        # virtual tokens' embeddings, and span logits must index the caller's tokens (set by tasks.methods.adapters).
        self.n_virtual_tokens = 0
        if config.tie_word_embeddings:
            # The tied LM head is saved once (as wte); this tells the Trainer, when it restores the best
            # checkpoint, that its absence is expected (it re-ties instead of warning about a missing key).
            self._keys_to_ignore_on_save = ["backbone.lm_head.weight"]
        self.post_init()

    def _build_head(self, config: GPT2Config) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _init_weights(self, module: nn.Module) -> None:
        # Only the head is new; the backbone's weights come from pretraining (its own init handles fresh ones).
        if isinstance(module, nn.Linear) and module in self._head_modules():
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _head_modules(self) -> list[nn.Module]:
        return []

    @classmethod
    def from_backbone(cls, backbone: GPT2LMModel, **head_config: Any) -> "GPT2HeadModel":
        """A head around an already loaded backbone (its weights are kept; the head is freshly initialised)."""
        config = copy.deepcopy(backbone.config)
        for k, v in head_config.items():
            setattr(config, k, v)
        model = cls(config, backbone=backbone)
        return model.to(device=backbone.device)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.backbone.set_input_embeddings(value)

    def _last_hidden(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        past_key_values: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final hidden states of the caller's tokens (B, T, C) and their 2-D attention mask (or None)."""
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            past_key_values=past_key_values,
            output_hidden_states=True,
            logits_to_keep=1,
        )
        hidden = out.hidden_states[-1]
        n_virtual = self.n_virtual_tokens if inputs_embeds is not None else 0
        if n_virtual and hidden.shape[1] > n_virtual:
            hidden = hidden[:, n_virtual:]
        if attention_mask is not None:
            attention_mask = attention_mask[:, -hidden.shape[1]:]  # prefix tuning prepends ones for its cache
        return hidden, attention_mask


class GPT2ForSequenceClassification(GPT2HeadModel):
    """Pools the last real (non-pad) token, found from the attention mask, so pad == eos does not matter and
    left and right padding give the same logits."""

    def _build_head(self, config: GPT2Config) -> None:
        self.score = nn.Linear(config.n_embd, config.num_labels, bias=False)

    def _head_modules(self) -> list[nn.Module]:
        return [self.score]

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> ClassifierOutput:
        hidden, mask = self._last_hidden(input_ids, attention_mask, inputs_embeds, past_key_values)
        B, T, _ = hidden.shape
        if mask is None:
            last = torch.full((B,), T - 1, device=hidden.device)
        else:
            # Index of the last 1 in each row: works for left padding (always T-1) and right padding.
            positions = torch.arange(T, device=hidden.device)
            last = (mask.to(torch.long) * positions).argmax(-1)
        pooled = hidden[torch.arange(B, device=hidden.device), last]  # (B, C)
        logits = self.score(pooled)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels.to(logits.device))
        return ClassifierOutput(loss=loss, logits=logits)


class GPT2ForQuestionAnswering(GPT2HeadModel):
    """Start/end logits for every token from a `Linear(hidden, 2)`; the loss averages both ends' cross-entropy.

    Inputs put the question before the context, so (causal attention) every context token has seen the question.
    """

    def _build_head(self, config: GPT2Config) -> None:
        self.qa_outputs = nn.Linear(config.n_embd, 2)

    def _head_modules(self) -> list[nn.Module]:
        return [self.qa_outputs]

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> SpanOutput:
        hidden, _ = self._last_hidden(input_ids, attention_mask, inputs_embeds, past_key_values)
        start_logits, end_logits = self.qa_outputs(hidden).float().unbind(-1)  # each (B, T)
        loss = None
        if start_positions is not None and end_positions is not None:
            T = start_logits.shape[1]
            # Positions outside the sequence are ignored, as in transformers' QA heads.
            start = start_positions.to(start_logits.device).clamp(0, T)
            end = end_positions.to(end_logits.device).clamp(0, T)
            loss = (F.cross_entropy(start_logits, start, ignore_index=T)
                    + F.cross_entropy(end_logits, end, ignore_index=T)) / 2
        return SpanOutput(loss=loss, start_logits=start_logits, end_logits=end_logits)


class GPT2ForSentenceScoring(GPT2HeadModel):
    """BertSum's head on GPT-2: a `Linear(hidden, 1)` scores each sentence at its last token, which (causal
    attention) has read the sentence and everything before it in the window. The loss is the binary cross-entropy
    of the scores against 0/1 labels (is the sentence in the oracle summary?), averaged over real sentence slots.

    `sentence_positions` (B, S) index the window's tokens; -1 marks an empty slot (windows hold different numbers
    of sentences), and its label is ignored.
    """

    def _build_head(self, config: GPT2Config) -> None:
        self.sentence_score = nn.Linear(config.n_embd, 1)

    def _head_modules(self) -> list[nn.Module]:
        return [self.sentence_score]

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        sentence_positions: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> SentenceScoreOutput:
        if sentence_positions is None:
            raise ValueError("sentence scoring needs sentence_positions (the last token of each sentence)")
        hidden, _ = self._last_hidden(input_ids, attention_mask, inputs_embeds, past_key_values)
        B = hidden.shape[0]
        slots = sentence_positions.to(hidden.device)
        real = slots >= 0  # (B, S)
        rows = torch.arange(B, device=hidden.device)[:, None].expand_as(slots)
        picked = hidden[rows, slots.clamp(min=0)]  # (B, S, C)
        logits = self.sentence_score(picked).squeeze(-1).float()  # (B, S)
        loss = None
        if labels is not None:
            target = labels.to(logits.device).float()
            real = real & (target >= 0)
            loss = F.binary_cross_entropy_with_logits(logits[real], target[real])
        return SentenceScoreOutput(loss=loss, logits=logits.masked_fill(~real, float("-inf")))
