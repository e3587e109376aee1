"""Task rows -> model inputs, with `datasets.map` and the fast tokenizer (offsets, overflowing windows).

- classification: `text` -> `input_ids`, `attention_mask`, `labels` (truncated to `max_length`).
- qa: question first, then the context (so, under causal attention, context tokens see the question), cut into
  windows of `max_length` tokens that overlap by `doc_stride` (run_qa.py's scheme: `truncation="only_second"`,
  `return_overflowing_tokens`, `stride`, `return_offsets_mapping`). Training windows get the answer's token
  span, or position 0 ("no answer in this window") when the answer lies outside the window. Evaluation windows
  keep `example_id` and offsets for the context tokens only, for `tasks.predict.postprocess_qa`.
- generation: `source + separator` (prompt) then ` target` + EOS; labels are -100 on the prompt, so the loss is
  on target tokens only. Long sources are cut (keeping the start by default) so prompt + target fit.

Every function raises `FeatureError` with a clear message for input it cannot use (labels outside the label
set, empty splits, answers that cannot be found in their context for every example).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tasks.registry import TaskSpec

logger = logging.getLogger(__name__)

NO_ANSWER_POSITION = 0  # windows without the answer point both ends here, as run_qa points them at [CLS]
QUESTION_SUFFIX = "\n"  # separates the question from the context (GPT-2 has no [SEP] token)


class FeatureError(ValueError):
    """Task data that cannot be turned into model inputs as asked."""


def _require_rows(dataset: Any, task: TaskSpec, what: str) -> None:
    if len(dataset) == 0:
        raise FeatureError(f"{task.name}: the {what} set is empty; check the split and --max-*-examples")


# ---- classification --------------------------------------------------------------------------------------


def classification_features(dataset: Any, tokenizer: Any, task: TaskSpec, max_length: int) -> Any:
    """`input_ids`, `attention_mask`, `labels` for every row; a label outside `task.label_names` is an error."""
    _require_rows(dataset, task, "classification")
    n_labels = len(task.label_names)
    bad = [(r, lab) for r, lab in zip(dataset["id"], dataset["label"]) if not (0 <= int(lab) < n_labels)]
    if bad:
        ids = ", ".join(f"{i!r} (label {lab})" for i, lab in bad[:5])
        raise FeatureError(
            f"{task.name}: {len(bad)} example(s) have labels outside 0..{n_labels - 1} ({', '.join(task.label_names)}),"
            f" e.g. {ids}; unlabelled splits (label -1, like GLUE test sets) cannot be used for training or scoring"
        )

    def encode(batch: dict[str, list]) -> dict[str, list]:
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": batch["label"]}

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenizing")


# ---- extractive QA ---------------------------------------------------------------------------------------


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


def _qa_tokenize(tokenizer: Any, questions: list[str], contexts: list[str], max_length: int, doc_stride: int) -> Any:
    if doc_stride >= max_length // 2:
        raise FeatureError(f"doc_stride ({doc_stride}) must be well below max_length ({max_length}); try max_length/3")
    questions = [q.strip() + QUESTION_SUFFIX for q in questions]
    longest = max(len(tokenizer(q)["input_ids"]) for q in questions)
    if longest + doc_stride + 8 > max_length:
        raise FeatureError(
            f"a question of {longest} tokens leaves no room for context windows of max_length={max_length} with "
            f"doc_stride={doc_stride}; raise max_length or lower doc_stride"
        )
    return tokenizer(
        questions,
        contexts,
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def qa_train_features(dataset: Any, tokenizer: Any, task: TaskSpec, max_length: int, doc_stride: int) -> Any:
    """Training windows with `start_positions` / `end_positions` (token indices in the window).

    Examples whose answer text is not in their context are skipped and counted (a warning); if that leaves
    nothing, it is an error.
    """
    _require_rows(dataset, task, "QA training")
    spans = [locate_answer(c, a) for c, a in zip(dataset["context"], dataset["answers"])]
    missing = [i for i, s in enumerate(spans) if s is None]
    if missing:
        ids = ", ".join(repr(dataset[i]["id"]) for i in missing[:5])
        logger.warning("%s: skipped %d of %d training examples whose answer is not in the context (e.g. %s)",
                       task.name, len(missing), len(spans), ids)
        if len(missing) == len(spans):
            raise FeatureError(f"{task.name}: no training example has its answer inside its context (e.g. {ids})")
        keep = [i for i, s in enumerate(spans) if s is not None]
        dataset = dataset.select(keep)
        spans = [spans[i] for i in keep]
    dataset = dataset.add_column("_span", [list(s) for s in spans])

    def encode(batch: dict[str, list]) -> dict[str, list]:
        enc = _qa_tokenize(tokenizer, batch["question"], batch["context"], max_length, doc_stride)
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
            start = next(t for t in ctx if offsets[t][1] > char_start)
            end = next(t for t in reversed(ctx) if offsets[t][0] < char_end)
            starts.append(start)
            ends.append(end)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "start_positions": starts, "end_positions": ends}

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="QA windows")


def qa_eval_features(dataset: Any, tokenizer: Any, task: TaskSpec, max_length: int, doc_stride: int) -> Any:
    """Evaluation windows: `input_ids`, `attention_mask`, `example_id` and `offset_mapping` (None outside the
    context, so postprocessing can only pick context spans)."""
    _require_rows(dataset, task, "QA evaluation")

    def encode(batch: dict[str, list]) -> dict[str, list]:
        enc = _qa_tokenize(tokenizer, batch["question"], batch["context"], max_length, doc_stride)
        example_ids, offsets = [], []
        for w, offs in enumerate(enc["offset_mapping"]):
            seq_ids = enc.sequence_ids(w)
            example_ids.append(batch["id"][enc["overflow_to_sample_mapping"][w]])
            offsets.append([list(o) if s == 1 else None for o, s in zip(offs, seq_ids)])
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "example_id": example_ids, "offset_mapping": offsets}

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="QA windows")


# ---- conditional LM (translation, summarization) ---------------------------------------------------------


def prompt_ids(tokenizer: Any, task: TaskSpec, source: str, max_prompt_tokens: int, keep: str = "start") -> list[int]:
    """Token ids of `source + task.separator`, the source cut to fit `max_prompt_tokens` (the separator stays).

    `keep="start"` drops the end of a long source (news and abstracts put the gist first); "end" drops its start.
    """
    sep = tokenizer(task.separator, add_special_tokens=False)["input_ids"] if task.separator else []
    whole = tokenizer(source + task.separator, add_special_tokens=False)["input_ids"]
    if len(whole) <= max_prompt_tokens:
        return whole
    room = max_prompt_tokens - len(sep)
    if room < 1:
        raise FeatureError(f"max prompt length {max_prompt_tokens} leaves no room for the source of a {task.name} example")
    src = tokenizer(source, add_special_tokens=False)["input_ids"]
    src = src[:room] if keep == "start" else src[-room:]
    return src + sep


def target_ids(tokenizer: Any, target: str, max_target_tokens: int) -> list[int]:
    """` target` + EOS, the target cut to `max_target_tokens` (EOS is always kept so the model learns to stop)."""
    ids = tokenizer(" " + target.strip(), add_special_tokens=False)["input_ids"][:max_target_tokens]
    return ids + [tokenizer.eos_token_id]


def generation_train_features(
    dataset: Any, tokenizer: Any, task: TaskSpec, max_length: int, max_target_tokens: int, keep: str = "start"
) -> Any:
    """`input_ids`, `attention_mask`, `labels` (-100 on the prompt) for `source + separator + " " + target + EOS`,
    with the first reference as the target."""
    _require_rows(dataset, task, "generation training")
    if max_target_tokens + 2 >= max_length:
        raise FeatureError(f"max_target_tokens ({max_target_tokens}) must be well below max_length ({max_length})")

    def encode(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
        for source, refs in zip(batch["source"], batch["references"]):
            tgt = target_ids(tokenizer, refs[0], max_target_tokens)
            prompt = prompt_ids(tokenizer, task, source, max_length - len(tgt), keep)
            out["input_ids"].append(prompt + tgt)
            out["attention_mask"].append([1] * (len(prompt) + len(tgt)))
            out["labels"].append([-100] * len(prompt) + tgt)
        return out

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenizing")
