"""A task, as data: the typed form of one `tasks/specs/<name>.yaml` file.

Every key is described in the README's "Adding a task" section. This module only defines the shape; reading
and checking a file (unknown keys fail with a did-you-mean, the task kind checks its own keys) is
`tasks.data.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class DataSource:
    """Where rows come from: the local mirror first (`<data dir>/<local>/<split>.jsonl.gz`, or `.txt.gz` for
    `format: text`), else the Hugging Face Hub (`load_dataset(hub, hub_config, split=...)`)."""

    local: str | None = None
    hub: str | None = None
    hub_config: str | None = None
    format: str = "jsonl"  # jsonl | text (one document per file: language modelling)


@dataclass
class SplitSource:
    """One split of the task: an upstream split as is, or a share of one carved by a stable hash of the row id.

    Carved parts of one upstream split take consecutive ranges of hash positions in the order the spec lists
    them (`gpt2core.hashing.share_ranges`); an upstream split that is also listed under its own name without a
    carve keeps what the carved parts leave."""

    source: str
    share: float | None = None  # None: the whole upstream split (minus the parts carved from it)
    seed: int = 0


@dataclass
class PromptTemplate:
    """Zero/few-shot prompt pieces. `input` ends where the answer begins; fields are the kind's row fields
    ({text}, {question}, {context}, {source}); `answer` uses {label}, {answer} or {target}."""

    instruction: str = ""
    input: str = ""
    answer: str = ""


@dataclass
class GenerationLimits:
    """Conditional LM format, decoding limits and decoding settings: `source + separator + " " + target + EOS`.

    The decoding settings are what a fine-tuned model's predictions use (chosen on validation with
    scripts/choose_decoding.py); their defaults are plain greedy decoding, and a default is left out of the cache
    key (`registry.spec_fields`), so that stating it re-keys nothing."""

    separator: str = ""
    max_target_tokens: int = 64  # training targets and generated tokens
    stop: list[str] = field(default_factory=lambda: ["\n"])
    num_beams: int = 1  # 1: greedy
    length_penalty: float = 1.0  # beam search: the score is sum log p / length ** length_penalty
    no_repeat_ngram_size: int = 0  # > 0: no n-gram of this size occurs twice in prompt + output (0: no guard)
    repetition_penalty: float = 1.0  # > 1 makes tokens already in prompt + output less likely (1: none)


# The decoding settings of `GenerationLimits` and their defaults (plain greedy).
DECODING_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(GenerationLimits)
                                     if f.name in ("num_beams", "length_penalty", "no_repeat_ngram_size",
                                                   "repetition_penalty")}


@dataclass
class TaskSpec:
    name: str
    kind: str  # classification | extractive_qa | conditional_generation | language_modelling
    version: str = "1"
    description: str = ""
    data: DataSource = field(default_factory=DataSource)
    splits: dict[str, SplitSource] = field(default_factory=dict)
    train_split: str = "train"  # demos, baselines and fine-tuning read it
    eval_split: str = "test"  # the split scores are reported on
    fields: dict[str, str | None] = field(default_factory=dict)  # row field -> dotted path in the raw record
    process_row: str | None = None  # a named hook "module:function" or "file.py:function" (next to the spec)
    labels: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    primary_metric: str = ""
    prompt: PromptTemplate = field(default_factory=PromptTemplate)
    generation: GenerationLimits = field(default_factory=GenerationLimits)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)  # baseline name -> its parameters
    source_file: str = ""  # set by the registry: the YAML file it was read from

    # Short names the rest of the suite reads.
    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.labels)

    @property
    def separator(self) -> str:
        return self.generation.separator

    @property
    def max_target_tokens(self) -> int:
        return self.generation.max_target_tokens

    def has_split(self, split: str) -> bool:
        return split in self.splits
