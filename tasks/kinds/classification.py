"""Sequence classification: rows `id`, `text`, `label` (an index into the spec's `labels`).

Fine-tuning: the last real token's hidden state -> a linear head (`score`). Prompting: every label's
verbalizer (the answer template with the label name) is scored after the prompt by its summed log-likelihood,
and the labels are ranked by two rules, as lm-evaluation-harness ranks multiple-choice answers:
- `accuracy` (lm-eval `acc`): the highest summed log-likelihood; this rule gives the row's `prediction` and the
  spec's other metrics (F1);
- `accuracy_norm` (lm-eval `acc_norm`): the highest log-likelihood divided by the verbalizer's length in bytes.
A mean per *token* is not used: it favours labels that split into more tokens (on a 2-label task where one
verbalizer is 2 tokens and the other 1, it predicted the 2-token label for every example). Contextual calibration
applies to each rule's own scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.data.spec import TaskSpec
from tasks.errors import DataError, TaskError
from tasks.evaluation.metrics import compute_metrics, example_scores
from tasks.kinds.base import FINETUNE_METHODS, PredictSettings, Prompted, TaskKind, batches, pad, require_rows

# The metric each prompting rule's accuracy is reported as, and the rule as the record's config names it.
SUM_METRIC, NORM_METRIC = "accuracy", "accuracy_norm"
SUM_RULE = "sum of log-likelihoods (lm-eval acc)"
NORM_RULE = "log-likelihood / answer bytes (lm-eval acc_norm)"


def _best(spec: TaskSpec, scores: list[list[float]]) -> list[str]:
    # the first of equal maxima, as numpy's argmax in lm-eval
    return [spec.labels[max(range(len(s)), key=s.__getitem__)] for s in scores]


def _rule_scores(loglikelihoods: list[list[float]], n_bytes: list[int]) -> dict[str, list[list[float]]]:
    return {SUM_METRIC: [list(s) for s in loglikelihoods],
            NORM_METRIC: [[x / b for x, b in zip(s, n_bytes)] for s in loglikelihoods]}


def _sum_metrics(spec: TaskSpec) -> list[str]:
    """The metrics scored on the sum rule's predictions: `accuracy` and the spec's others (F1)."""
    return list(dict.fromkeys([SUM_METRIC, *(m for m in spec.metrics if m != NORM_METRIC)]))


def _softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [x / s for x in e]


class Classification(TaskKind):
    name = "classification"
    row_fields = ("id", "text", "label")
    document_field = "text"
    default_metrics = ("accuracy", "macro_f1")
    baselines = ("majority", "tfidf-lr")
    finetune_methods = FINETUNE_METHODS
    prompting = True
    calibrates = True
    head_module = "score"
    peft_task_type = "SEQ_CLS"

    def validate(self, spec: TaskSpec) -> None:
        super().validate(spec)
        if len(spec.labels) < 2:
            raise TaskError("labels: a classification task needs at least two label names")
        if len(set(spec.labels)) != len(spec.labels):
            raise TaskError("labels: a label name is listed twice")
        if "binary_f1" in spec.metrics and len(spec.labels) != 2:
            raise TaskError("metrics: binary_f1 needs exactly two labels (the second is the positive class); "
                            "use macro_f1")
        if "{label}" not in spec.prompt.answer:
            raise TaskError("prompt.answer: a classification answer template must contain {label}")

    def make_row(self, spec: TaskSpec, record: dict[str, Any], index: int) -> dict[str, Any]:
        label = self.field(spec, record, "label", index)
        if isinstance(label, str) and label in spec.labels:
            label = spec.labels.index(label)
        return {"id": str(self.field(spec, record, "id", index)),
                "text": str(self.field(spec, record, "text", index)).strip(), "label": int(label)}

    def references(self, spec: TaskSpec, row: dict[str, Any]) -> list[str]:
        return [spec.labels[int(row["label"])]]

    # -- fine-tuning
    def head_class(self) -> Any:
        from tasks.models.heads import GPT2ForSequenceClassification

        return GPT2ForSequenceClassification

    def head_config(self, spec: TaskSpec) -> dict[str, Any]:
        return {"num_labels": len(spec.labels), "id2label": dict(enumerate(spec.labels)),
                "label2id": {name: i for i, name in enumerate(spec.labels)}}

    def train_features(self, spec: TaskSpec, rows: Any, tokenizer: Any, cfg: Any, max_length: int) -> Any:
        """`input_ids`, `attention_mask`, `labels`; a label outside the label set is an error."""
        require_rows(rows, spec, "classification")
        n_labels = len(spec.labels)
        bad = [(r, lab) for r, lab in zip(rows["id"], rows["label"]) if not (0 <= int(lab) < n_labels)]
        if bad:
            ids = ", ".join(f"{i!r} (label {lab})" for i, lab in bad[:5])
            raise DataError(
                f"{spec.name}: {len(bad)} example(s) have labels outside 0..{n_labels - 1} "
                f"({', '.join(spec.labels)}), e.g. {ids}; unlabelled splits (label -1, like GLUE test sets) cannot "
                "be used for training or scoring")

        def encode(batch: dict[str, list]) -> dict[str, list]:
            enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
            return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": batch["label"]}

        return rows.map(encode, batched=True, remove_columns=rows.column_names, desc="tokenizing")

    def predict(self, spec: TaskSpec, model: Any, tokenizer: Any, rows: Any, settings: PredictSettings) -> list[str]:
        """The head's argmax, as a label name."""
        import torch

        max_len = settings.max_length - settings.reserved_positions
        seqs = tokenizer(list(rows["text"]), truncation=True, max_length=max_len)["input_ids"]
        preds: list[str] = [""] * len(seqs)
        device = next(model.parameters()).device
        with torch.inference_mode():
            for batch in batches([len(x) for x in seqs], settings.batch_size):
                ids, mask = pad(tokenizer, [seqs[i] for i in batch], "right", device)
                logits = model(input_ids=ids, attention_mask=mask).logits
                for i, label in zip(batch, logits.argmax(-1).tolist()):
                    preds[i] = spec.labels[label]
        return preds

    # -- prompting
    def render_input(self, spec: TaskSpec, row: dict[str, Any]) -> str:
        return spec.prompt.input.format(text=row["text"])

    def render_answer(self, spec: TaskSpec, row: dict[str, Any]) -> str:
        return spec.prompt.answer.format(label=spec.labels[row["label"]])

    def verbalizers(self, spec: TaskSpec) -> list[str]:
        return [spec.prompt.answer.format(label=name) for name in spec.labels]

    def demo_strata(self, spec: TaskSpec, rows: list[dict[str, Any]]) -> list[int] | None:
        return [int(r["label"]) for r in rows]

    def answer_room(self, spec: TaskSpec, lm: Any) -> int:
        return max(max(1, lm.token_count(v)) for v in self.verbalizers(spec))

    def label_bytes(self, spec: TaskSpec) -> list[int]:
        """Each verbalizer's length in UTF-8 bytes, the `accuracy_norm` divisor. lm-eval's `acc_norm` divides by
        `len(choice)` in characters; for ASCII labels bytes and characters are the same, and bytes do not depend on
        how a tokenizer splits the label. (lm-eval's choice excludes its target delimiter " "; here the whole
        verbalizer, leading space included, is the answer that was scored.)"""
        return [max(1, len(v.encode("utf-8"))) for v in self.verbalizers(spec)]

    def label_scores(self, spec: TaskSpec, lm: Any, contexts: list[str]) -> list[list[float]]:
        """Summed log-likelihood of every verbalizer after every context: (n_contexts, n_labels)."""
        conts = self.verbalizers(spec)
        lls = lm.loglikelihood([(c, v) for c in contexts for v in conts])
        n = len(conts)
        return [[lls[i * n + j][0] for j in range(n)] for i in range(len(contexts))]

    def answer_prompts(self, spec: TaskSpec, lm: Any, contexts: list[str]) -> Prompted:
        """Sum-rule predictions and the raw summed log-likelihoods (`rank_labels` adds the other rule)."""
        scores = self.label_scores(spec, lm, contexts)
        return Prompted(_best(spec, scores), scores)

    def prompt_scoring(self, spec: TaskSpec) -> dict[str, str]:
        """The rule behind each metric a prompted record carries."""
        return {**{m: SUM_RULE for m in _sum_metrics(spec)}, NORM_METRIC: NORM_RULE}

    def rank_labels(self, spec: TaskSpec, lm: Any, loglikelihoods: list[list[float]],
                    content_free: list[str] | None = None) -> "Ranked":
        """Predictions under both rules from the summed log-likelihoods; with `content_free` prompts, each rule's
        scores are calibrated first (Zhao et al. 2021: the label distribution, softmax of the rule's scores,
        divided by its mean over the content-free prompts, renormalized)."""
        n_bytes = self.label_bytes(spec)
        scores = _rule_scores(loglikelihoods, n_bytes)
        cf_probs: dict[str, dict[str, float]] | None = None
        if content_free is not None:
            cf_scores = _rule_scores(self.label_scores(spec, lm, content_free), n_bytes)
            cf_probs = {}
            for rule, rule_scores in scores.items():
                probs = [_softmax(s) for s in cf_scores[rule]]
                p_cf = [sum(p[j] for p in probs) / len(probs) for j in range(len(spec.labels))]
                # softmax(s) / p_cf, renormalized: the argmax is that of log softmax(s) - log p_cf.
                scores[rule] = [[math.log(p) - math.log(q) for p, q in zip(_softmax(s), p_cf)] for s in rule_scores]
                cf_probs[rule] = dict(zip(spec.labels, p_cf))
        preds = {rule: _best(spec, s) for rule, s in scores.items()}
        return Ranked(preds[SUM_METRIC], loglikelihoods, labels=tuple(spec.labels), label_bytes=n_bytes,
                      rule_predictions=preds, rule_scores=scores if content_free is not None else {},
                      content_free_probs=cf_probs)


@dataclass
class Ranked(Prompted):
    """Prompted answers ranked by both rules. `predictions` are the sum rule's, `label_scores` the raw summed
    log-likelihoods; `rule_scores` are what each rule took the argmax of when calibrated (else empty: the raw sums
    and sums / `label_bytes`)."""

    labels: tuple[str, ...] = ()
    label_bytes: list[int] = field(default_factory=list)
    rule_predictions: dict[str, list[str]] = field(default_factory=dict)
    rule_scores: dict[str, list[list[float]]] = field(default_factory=dict)
    content_free_probs: dict[str, dict[str, float]] | None = None

    def metrics(self, spec: TaskSpec, references: list[list[str]]) -> dict[str, float]:
        """The sum rule's metrics (`accuracy`, the spec's F1), then `accuracy_norm`."""
        values = compute_metrics(_sum_metrics(spec), self.rule_predictions[SUM_METRIC], references, self.labels)
        norm = compute_metrics([SUM_METRIC], self.rule_predictions[NORM_METRIC], references, self.labels)
        return {**values, NORM_METRIC: norm[SUM_METRIC]}

    def example_scores(self, spec: TaskSpec, i: int, references: Sequence[str]) -> dict[str, float]:
        """Example i's scores: `correct`, `accuracy` (sum rule) and `accuracy_norm`, which average to the metrics."""
        out = example_scores(_sum_metrics(spec), self.rule_predictions[SUM_METRIC][i], list(references))
        norm = example_scores([SUM_METRIC], self.rule_predictions[NORM_METRIC][i], list(references))
        return {**out, NORM_METRIC: norm[SUM_METRIC]}

    def details(self, i: int) -> dict[str, Any]:
        """What example i's ranking can be recomputed from: the raw sums, the byte lengths, the norm prediction
        (and each rule's calibrated scores)."""
        out: dict[str, Any] = {
            "prediction_norm": self.rule_predictions[NORM_METRIC][i],
            "label_loglikelihoods": dict(zip(self.labels, self.label_scores[i])),
            "label_bytes": dict(zip(self.labels, self.label_bytes)),
        }
        if self.rule_scores:
            out["calibrated_scores"] = {rule: dict(zip(self.labels, s[i])) for rule, s in self.rule_scores.items()}
        return out
