"""Sequence classification: rows `id`, `text`, `label` (an index into the spec's `labels`).

Fine-tuning: the last real token's hidden state -> a linear head (`score`). Prompting: every label's
verbalizer (the answer template with the label name) is scored after the prompt and the best one wins; the
score is the mean log-probability per verbalizer token (length-normalized).
"""

from __future__ import annotations

import math
from typing import Any

from tasks.data.spec import TaskSpec
from tasks.errors import DataError, TaskError
from tasks.kinds.base import FINETUNE_METHODS, PredictSettings, Prompted, TaskKind, batches, pad, require_rows


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

    def label_scores(self, spec: TaskSpec, lm: Any, contexts: list[str]) -> list[list[float]]:
        """Length-normalized log-likelihood of every verbalizer after every context: (n_contexts, n_labels)."""
        conts = self.verbalizers(spec)
        n_tokens = [max(1, lm.token_count(v)) for v in conts]
        lls = lm.loglikelihood([(c, v) for c in contexts for v in conts])
        n = len(conts)
        return [[lls[i * n + j][0] / n_tokens[j] for j in range(n)] for i in range(len(contexts))]

    def _best(self, spec: TaskSpec, scores: list[list[float]]) -> list[str]:
        return [spec.labels[max(range(len(s)), key=s.__getitem__)] for s in scores]

    def answer_prompts(self, spec: TaskSpec, lm: Any, contexts: list[str]) -> Prompted:
        scores = self.label_scores(spec, lm, contexts)
        return Prompted(self._best(spec, scores), scores)

    def prompt_scoring(self, spec: TaskSpec) -> str:
        return "mean log-probability per continuation token (length-normalized)"

    def calibrate(self, spec: TaskSpec, lm: Any, scores: list[list[float]],
                  content_free: list[str]) -> tuple[Prompted, dict[str, float]]:
        """Contextual calibration (Zhao et al. 2021): the label distribution (softmax of the scores) divided by the
        mean distribution for content-free prompts, renormalized; returns the predictions and that bias."""
        cf_probs = [_softmax(s) for s in self.label_scores(spec, lm, content_free)]
        p_cf = [sum(p[j] for p in cf_probs) / len(cf_probs) for j in range(len(spec.labels))]
        # softmax(s) / p_cf, renormalized: the argmax is that of log softmax(s) - log p_cf.
        calibrated = [[math.log(p) - math.log(q) for p, q in zip(_softmax(s), p_cf)] for s in scores]
        return Prompted(self._best(spec, calibrated), calibrated), dict(zip(spec.labels, p_cf))
