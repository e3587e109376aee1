"""Method names as a config writes them (`baseline:majority`, `zero-shot`, `few-shot:4`, `finetune:lora`, ...),
parsed into what runs and how its rows are labelled; and the did-you-mean message every unknown name gets.

`finetune:extractive-full` / `finetune:extractive-lora` fine-tune the backbone (fully, or with LoRA) as a sentence
scorer for extractive summarization (tasks/methods/extractive) instead of generating: their own rows, beside the
task's abstractive `finetune:full` / `finetune:lora` rows, with the same fine-tuning config as those methods."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpt2core.typed_config import unknown_name
from tasks.leaderboard.tasks_api import BASELINES, FINETUNE_METHODS, LeaderboardError

# One name per baseline everywhere (configs, rows, the command line, the specs): the registry's.
BASELINE_NAMES = {name: name for name in BASELINES}
EXTRACTIVE = "extractive-"  # finetune:extractive-<method>: a sentence scorer trained with <method>
EXTRACTIVE_METHODS = ("full", "lora")
FINETUNE_NAMES = (*FINETUNE_METHODS, *(EXTRACTIVE + m for m in EXTRACTIVE_METHODS))
METHOD_FORMS = ("baseline:<" + "|".join(BASELINE_NAMES) + ">", "zero-shot", "few-shot:K", "few-shot-calibrated:K",
                "finetune:<" + "|".join(FINETUNE_NAMES) + ">")


def unknown(kind: str, name: str, valid: list[str] | tuple[str, ...], where: str) -> LeaderboardError:
    """`where: unknown <kind> 'x'. Did you mean 'y'? Valid <kind>s: ...` as a LeaderboardError."""
    return LeaderboardError(str(unknown_name(kind, name, valid, where)))


@dataclass(frozen=True)
class MethodSpec:
    """A parsed method name: what runs and how its rows are labelled."""

    name: str  # as in the config: few-shot:4
    kind: str  # baseline | fewshot | finetune (the leaderboard's cell kinds, not task kinds)
    row_method: str  # the leaderboard's method column: baseline:lead-k, zero-shot, few-shot, finetune:lora, ...
    shots: int | None = None
    calibrate: bool = False
    baseline: str | None = None  # tasks/methods/baselines.py name
    finetune: str | None = None  # fine-tuning method (tasks/methods/adapters.py)
    extractive: bool = False  # the extractive formulation (a sentence scorer; tasks/methods/extractive)


def parse_method(name: str, where: str = "methods") -> MethodSpec:
    bad = LeaderboardError(f"{where}: unknown method {name!r}. Valid methods: {', '.join(METHOD_FORMS)}")
    if name == "zero-shot":
        return MethodSpec(name, "fewshot", "zero-shot", shots=0)
    head, _, arg = name.partition(":")
    if head == "baseline":
        if arg not in BASELINE_NAMES:
            raise unknown("baseline", arg, list(BASELINE_NAMES), f"{where}: {name!r}")
        return MethodSpec(name, "baseline", f"baseline:{arg}", baseline=arg)
    if head in ("few-shot", "few-shot-calibrated"):
        if not re.fullmatch(r"\d+", arg):
            raise LeaderboardError(f"{where}: {name!r} needs a number of shots, e.g. {head}:4")
        k = int(arg)
        if head == "few-shot" and k == 0:
            raise LeaderboardError(f"{where}: few-shot:0 is zero-shot; write 'zero-shot'")
        return MethodSpec(name, "fewshot", head, shots=k, calibrate=head == "few-shot-calibrated")
    if head == "finetune":
        if arg not in FINETUNE_NAMES:
            raise unknown("fine-tuning method", arg, FINETUNE_NAMES, f"{where}: {name!r}")
        extractive = arg.startswith(EXTRACTIVE)
        return MethodSpec(name, "finetune", f"finetune:{arg}", finetune=arg.removeprefix(EXTRACTIVE),
                          extractive=extractive)
    raise bad
