"""Extractive question answering: rows `id`, `question`, `context`, `answers` ({"text": [...], "answer_start": [...]}).

Fine-tuning follows transformers' run_qa.py: question first, then the context (so, under causal attention,
every context token has seen the question), cut into windows of `max_length` tokens overlapping by `doc_stride`
(`truncation="only_second"`, `return_overflowing_tokens`, offsets). Training windows get the answer's token
span, or position 0 ("not in this window"); prediction takes, over all windows of an example, the best of the
n-best start x end pairs inside the context, end >= start, at most `max_answer_length` tokens.
Prompting generates the answer greedily until a newline.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from tasks.data.spec import TaskSpec
from tasks.errors import DataError
from tasks.kinds.base import PredictSettings, TaskKind, batches, pad, require_rows

logger = logging.getLogger(__name__)

NO_ANSWER_POSITION = 0  # windows without the answer point both ends here, as run_qa points them at [CLS]
QUESTION_SUFFIX = "\n"  # separates the question from the context (GPT-2 has no [SEP] token)


def locate_answer(context: str, answers: dict[str, Sequence[Any]]) -> tuple[int, int] | None:
    """(start char, end char) of the first gold answer in `context`, or None when no answer text is found.

    `answer_start` is trusted when the text is there; otherwise (a few percent of the rebuilt SQuAD train
    offsets are off) the nearest occurrence of the text is used.
    """
    for text, start in zip(answers.get("text", []), answers.get("answer_start", [])):
        if not text:
            continue
        if context[start:start + len(text)] == text:
            return start, start + len(text)
        hits, i = [], context.find(text)
        while i != -1:
            hits.append(i)
            i = context.find(text, i + 1)
        if hits:
            best = min(hits, key=lambda h: abs(h - start))
            return best, best + len(text)
    return None


def _tokenize(tokenizer: Any, questions: list[str], contexts: list[str], max_length: int, doc_stride: int) -> Any:
    if doc_stride >= max_length // 2:
        raise DataError(f"doc_stride ({doc_stride}) must be well below max_length ({max_length}); try max_length/3")
    questions = [q.strip() + QUESTION_SUFFIX for q in questions]
    longest = max(len(tokenizer(q)["input_ids"]) for q in questions)
    if longest + doc_stride + 8 > max_length:
        raise DataError(f"a question of {longest} tokens leaves no room for context windows of "
                        f"max_length={max_length} with doc_stride={doc_stride}; raise max_length or lower doc_stride")
    return tokenizer(questions, contexts, truncation="only_second", max_length=max_length, stride=doc_stride,
                     return_overflowing_tokens=True, return_offsets_mapping=True)


def eval_features(spec: TaskSpec, rows: Any, tokenizer: Any, max_length: int, doc_stride: int) -> Any:
    """Windows with `example_id` and `offset_mapping` (None outside the context: only context spans are picked)."""
    require_rows(rows, spec, "QA evaluation")

    def encode(batch: dict[str, list]) -> dict[str, list]:
        enc = _tokenize(tokenizer, batch["question"], batch["context"], max_length, doc_stride)
        example_ids, offsets = [], []
        for w, offs in enumerate(enc["offset_mapping"]):
            seq_ids = enc.sequence_ids(w)
            example_ids.append(batch["id"][enc["overflow_to_sample_mapping"][w]])
            offsets.append([list(o) if s == 1 else None for o, s in zip(offs, seq_ids)])
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "example_id": example_ids, "offset_mapping": offsets}

    return rows.map(encode, batched=True, remove_columns=rows.column_names, desc="QA windows")


def window_logits(model: Any, tokenizer: Any, features: Any, batch_size: int) -> tuple[list[Any], list[Any]]:
    """Start and end logits of every window (each trimmed to the window's length)."""
    import torch

    seqs = features["input_ids"]
    starts: list[Any] = [None] * len(seqs)
    ends: list[Any] = [None] * len(seqs)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for batch in batches([len(x) for x in seqs], batch_size):
            ids, mask = pad(tokenizer, [seqs[i] for i in batch], "right", device)
            out = model(input_ids=ids, attention_mask=mask)
            for j, i in enumerate(batch):
                n = len(seqs[i])
                starts[i] = out.start_logits[j, :n].float().cpu().numpy()
                ends[i] = out.end_logits[j, :n].float().cpu().numpy()
    return starts, ends


def postprocess(rows: Any, features: Any, start_logits: list[Any], end_logits: list[Any], n_best: int = 20,
                max_answer_length: int = 30) -> dict[str, str]:
    """Example id -> answer text: the highest start + end logit span over all of the example's windows
    (run_qa.py's `postprocess_qa_predictions` for SQuAD v1, which always has an answer)."""
    import numpy as np

    windows = defaultdict(list)
    for w, example_id in enumerate(features["example_id"]):
        windows[example_id].append(w)
    offsets_all = features["offset_mapping"]
    answers: dict[str, str] = {}
    for example_id, context in zip(rows["id"], rows["context"]):
        best_score, best = -np.inf, ""
        for w in windows.get(example_id, []):
            start, end, offsets = start_logits[w], end_logits[w], offsets_all[w]
            for si in np.argsort(start)[::-1][:n_best]:
                if si >= len(offsets) or offsets[si] is None:
                    continue
                for ei in np.argsort(end)[::-1][:n_best]:
                    if ei >= len(offsets) or offsets[ei] is None or ei < si or ei - si + 1 > max_answer_length:
                        continue
                    score = float(start[si] + end[ei])
                    if score > best_score:
                        best_score, best = score, context[offsets[si][0]:offsets[ei][1]]
        answers[example_id] = best.strip()  # byte-level BPE tokens carry their leading space
    return answers


class ExtractiveQA(TaskKind):
    name = "extractive_qa"
    row_fields = ("id", "question", "context", "answers")
    document_field = "context"
    default_metrics = ("exact_match", "f1")
    baselines = ("best-sentence", "best-sentence-span")
    finetune_methods = ("full", "linear", "lora", "prompt", "prefix")
    prompting = True
    head_module = "qa_outputs"
    peft_task_type = "QUESTION_ANS"
    trainer_label_names = ("start_positions", "end_positions")

    def make_row(self, spec: TaskSpec, record: dict[str, Any], index: int) -> dict[str, Any]:
        answers = self.field(spec, record, "answers", index)
        if not isinstance(answers, dict) or "text" not in answers:
            raise DataError(f"task {spec.name!r}: answers must be {{text: [...], answer_start: [...]}}, got "
                            f"{answers!r}")
        return {"id": str(self.field(spec, record, "id", index)),
                "question": str(self.field(spec, record, "question", index)).strip(),
                "context": str(self.field(spec, record, "context", index)),  # raw: answer offsets index it
                "answers": {"text": list(answers["text"]), "answer_start": list(answers.get("answer_start", []))}}

    def references(self, spec: TaskSpec, row: dict[str, Any]) -> list[str]:
        return list(row["answers"]["text"])

    # -- fine-tuning
    def head_class(self) -> Any:
        from tasks.models.heads import GPT2ForQuestionAnswering

        return GPT2ForQuestionAnswering

    def train_features(self, spec: TaskSpec, rows: Any, tokenizer: Any, cfg: Any, max_length: int) -> Any:
        """Training windows with `start_positions` / `end_positions`; examples whose answer text is not in their
        context are skipped and counted (a warning); if that leaves nothing, it is an error."""
        require_rows(rows, spec, "QA training")
        spans = [locate_answer(c, a) for c, a in zip(rows["context"], rows["answers"])]
        missing = [i for i, s in enumerate(spans) if s is None]
        if missing:
            ids = ", ".join(repr(rows[i]["id"]) for i in missing[:5])
            logger.warning("%s: skipped %d of %d training examples whose answer is not in the context (e.g. %s)",
                           spec.name, len(missing), len(spans), ids)
            if len(missing) == len(spans):
                raise DataError(f"{spec.name}: no training example has its answer inside its context (e.g. {ids})")
            keep = [i for i, s in enumerate(spans) if s is not None]
            rows = rows.select(keep)
            spans = [spans[i] for i in keep]
        rows = rows.add_column("_span", [list(s) for s in spans])
        doc_stride = cfg.doc_stride

        def encode(batch: dict[str, list]) -> dict[str, list]:
            enc = _tokenize(tokenizer, batch["question"], batch["context"], max_length, doc_stride)
            starts, ends = [], []
            for w, offsets in enumerate(enc["offset_mapping"]):
                char_start, char_end = batch["_span"][enc["overflow_to_sample_mapping"][w]]
                seq_ids = enc.sequence_ids(w)
                ctx = [t for t, s in enumerate(seq_ids) if s == 1]
                if not ctx or offsets[ctx[0]][0] > char_start or offsets[ctx[-1]][1] < char_end:
                    starts.append(NO_ANSWER_POSITION)
                    ends.append(NO_ANSWER_POSITION)
                    continue
                # First context token that ends after the answer starts; last that starts before it ends.
                starts.append(next(t for t in ctx if offsets[t][1] > char_start))
                ends.append(next(t for t in reversed(ctx) if offsets[t][0] < char_end))
            return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                    "start_positions": starts, "end_positions": ends}

        return rows.map(encode, batched=True, remove_columns=rows.column_names, desc="QA windows")

    def predict(self, spec: TaskSpec, model: Any, tokenizer: Any, rows: Any, settings: PredictSettings) -> list[str]:
        features = eval_features(spec, rows, tokenizer, settings.max_length - settings.reserved_positions,
                                 settings.doc_stride)
        starts, ends = window_logits(model, tokenizer, features, settings.batch_size)
        answers = postprocess(rows, features, starts, ends, settings.n_best, settings.max_answer_length)
        return [answers[i] for i in rows["id"]]

    # -- prompting
    def render_input(self, spec: TaskSpec, row: dict[str, Any]) -> str:
        return spec.prompt.input.format(context=row["context"], question=row["question"])

    def render_answer(self, spec: TaskSpec, row: dict[str, Any]) -> str:
        return spec.prompt.answer.format(answer=row["answers"]["text"][0])
