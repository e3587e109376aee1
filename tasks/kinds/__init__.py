"""Task kinds: one class each, owning what differs between kinds (rows, features, head, predictor, prompts,
the methods and baselines that apply). `get_kind(spec.kind)` is how the rest of the suite reaches them."""

from __future__ import annotations

from gpt2core.typed_config import unknown_name
from tasks.errors import TaskError
from tasks.kinds.base import PredictSettings, Prompted, TaskKind
from tasks.kinds.classification import Classification
from tasks.kinds.conditional_generation import ConditionalGeneration
from tasks.kinds.extractive_qa import ExtractiveQA
from tasks.kinds.language_modelling import LanguageModelling

KINDS: dict[str, TaskKind] = {k.name: k for k in (Classification(), ExtractiveQA(), ConditionalGeneration(),
                                                   LanguageModelling())}

__all__ = ["KINDS", "PredictSettings", "Prompted", "TaskKind", "get_kind"]


def get_kind(name: str) -> TaskKind:
    if name not in KINDS:
        raise TaskError(str(unknown_name("task kind", name, KINDS, "kind")))
    return KINDS[name]
