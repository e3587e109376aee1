"""What a task kind is: one class that owns everything that differs between kinds of task.

A kind turns raw records into its row layout, checks the spec keys it reads, builds training features and the
collator, names its head, predicts with a fine-tuned model, renders prompts, answers a prompted LM, and says
which adaptation methods and baselines apply. The rest of the suite asks the kind and never tests its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tasks.data.spec import TaskSpec
from tasks.errors import DataError, MethodError, TaskError

FINETUNE_METHODS = ("full", "linear", "lora", "prompt", "prefix")


@dataclass
class PredictSettings:
    max_length: int = 512  # tokens per input (QA window, classification text, generation prompt + output)
    batch_size: int = 32
    doc_stride: int = 128  # QA: overlap of consecutive windows
    max_answer_length: int = 30  # QA: longest answer span, in tokens
    n_best: int = 20  # QA: start and end candidates per window
    # generation decoding; None: the task spec's (`generation:` num_beams, length_penalty, no_repeat_ngram_size,
    # repetition_penalty), a value overrides it
    num_beams: int | None = None  # 1 = greedy
    length_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None  # generation: default the spec's max_target_tokens
    keep_source: str = "start"  # generation: which part of a long source to keep ("start" or "end")
    reserved_positions: int = 0  # positions taken by prompt/prefix tuning's virtual tokens


@dataclass
class Prompted:
    """A kind's answers to prompts: one prediction per prompt, and per-label scores when it ranks labels."""

    predictions: list[str]
    label_scores: list[list[float]] | None = None


def get_path(record: dict[str, Any], dotted: str, spec: TaskSpec) -> Any:
    """`record["a"]["b"]` for "a.b"; a missing field names the task and the field."""
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise DataError(f"task {spec.name!r}: field {dotted!r} is not in the records (keys: "
                            f"{', '.join(map(str, record)) if isinstance(record, dict) else type(record).__name__}); "
                            "fix `fields:` in its spec")
        value = value[part]
    return value


def batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped longest first, so padding stays small; callers restore the order."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad(tokenizer: Any, seqs: list[list[int]], side: str, device: Any) -> tuple[Any, Any]:
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, sl] = torch.tensor(s, dtype=torch.long)
        mask[i, sl] = 1
    return ids.to(device), mask.to(device)


def require_rows(rows: Any, spec: TaskSpec, what: str) -> None:
    if len(rows) == 0:
        raise DataError(f"{spec.name}: the {what} set is empty; check the split and --max-*-examples")


class TaskKind:
    """The interface; subclasses fill in what applies to them."""

    name: ClassVar[str]
    row_fields: ClassVar[tuple[str, ...]] = ()  # the row layout (every row has these keys)
    document_field: ClassVar[str | None] = None  # cut to fit a prompt when nothing else fits
    default_metrics: ClassVar[tuple[str, ...]] = ()
    baselines: ClassVar[tuple[str, ...]] = ()  # baselines a spec of this kind may list
    finetune_methods: ClassVar[tuple[str, ...]] = ()
    prompting: ClassVar[bool] = False  # zero/few-shot applies
    calibrates: ClassVar[bool] = False  # contextual calibration of prompted answers applies (the kind ranks labels)
    scores_text: ClassVar[bool] = False  # scored on whole documents (perplexity), not on examples
    needs_train_split: ClassVar[bool] = True
    head_module: ClassVar[str | None] = None  # the head's attribute name (PEFT modules_to_save), if any
    peft_task_type: ClassVar[str] = "CAUSAL_LM"
    trainer_label_names: ClassVar[tuple[str, ...]] = ("labels",)

    # -- the spec and its rows
    def validate(self, spec: TaskSpec) -> None:
        missing = [f for f in self.row_fields if f not in spec.fields]
        if missing:
            raise TaskError(f"fields: {self.name} tasks map {', '.join(self.row_fields)}; missing "
                            f"{', '.join(missing)} (null for 'id' means the row's position)")
        extra = [f for f in spec.fields if f not in self.row_fields]
        if extra:
            raise TaskError(f"fields: {', '.join(extra)} is not a {self.name} row field "
                            f"({', '.join(self.row_fields)})")
        for f, path in spec.fields.items():
            if path is None and f != "id":
                raise TaskError(f"fields.{f}: give the record's field (only 'id' may be null)")
        if self.prompting and spec.prompt.input == "":
            raise TaskError("prompt.input: give the prompt template (e.g. \"Question: {text}\\nType:\")")

    def field(self, spec: TaskSpec, record: dict[str, Any], name: str, index: int) -> Any:
        path = spec.fields.get(name)
        if path is None:
            return str(index)
        return get_path(record, path, spec)

    def make_row(self, spec: TaskSpec, record: dict[str, Any], index: int) -> dict[str, Any]:
        raise TaskError(f"{self.name} tasks have no example rows")

    def references(self, spec: TaskSpec, row: dict[str, Any]) -> list[str]:
        raise TaskError(f"{self.name} tasks have no references")

    # -- fine-tuning
    def check_method(self, spec: TaskSpec, method: str) -> None:
        if method not in FINETUNE_METHODS:
            from gpt2core.typed_config import unknown_name

            raise MethodError(str(unknown_name("method", method, FINETUNE_METHODS)))
        if method not in self.finetune_methods:
            raise MethodError(f"method {method!r} does not apply to {spec.name!r} ({self.name} tasks: "
                              f"{', '.join(self.finetune_methods) or 'no fine-tuning'})")

    def head_class(self) -> Any:
        return None  # no head: the backbone's LM head

    def head_config(self, spec: TaskSpec) -> dict[str, Any]:
        return {}

    def train_features(self, spec: TaskSpec, rows: Any, tokenizer: Any, cfg: Any, max_length: int) -> Any:
        raise MethodError(f"{self.name} tasks are not fine-tuned")

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def predict(self, spec: TaskSpec, model: Any, tokenizer: Any, rows: Any, settings: PredictSettings) -> list[str]:
        raise MethodError(f"{self.name} tasks are not predicted example by example")

    def decoding(self, spec: TaskSpec, settings: PredictSettings) -> dict[str, Any]:
        """How `predict` decodes, for run records ({} when the kind does not generate text)."""
        return {}

    # -- prompting
    def render_input(self, spec: TaskSpec, row: dict[str, Any]) -> str:
        raise MethodError(f"{self.name} tasks are not prompted")

    def render_answer(self, spec: TaskSpec, row: dict[str, Any]) -> str:
        raise MethodError(f"{self.name} tasks are not prompted")

    def demo_strata(self, spec: TaskSpec, rows: list[dict[str, Any]]) -> list[int] | None:
        """A stratum per train row for class-balanced demos, or None to draw demos uniformly."""
        return None

    def answer_room(self, spec: TaskSpec, lm: Any) -> int:
        """Tokens a prompt must leave free for the answer."""
        return spec.max_target_tokens

    def answer_prompts(self, spec: TaskSpec, lm: Any, contexts: list[str]) -> Prompted:
        """Predictions of `lm` for prompts that end where the answer begins: greedy until a stop string."""
        gen = {"until": list(spec.generation.stop), "max_gen_toks": spec.max_target_tokens}
        outputs = lm.generate_until([(c, dict(gen)) for c in contexts])
        return Prompted([g.strip() for g in outputs])

    def prompt_scoring(self, spec: TaskSpec) -> str:
        return "greedy until " + repr(spec.generation.stop[0] if spec.generation.stop else "EOS")
