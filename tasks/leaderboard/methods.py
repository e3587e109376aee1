"""Method names as a config writes them (`baseline:majority`, `zero-shot`, `few-shot:4`, `finetune:lora`, ...),
parsed into what runs and how its rows are labelled; and the did-you-mean message every unknown name gets."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpt2core.typed_config import unknown_name
from tasks.leaderboard.tasks_api import BASELINES, FINETUNE_METHODS, LeaderboardError

# One name per baseline everywhere (configs, rows, the command line, the specs): the registry's.
BASELINE_NAMES = {name: name for name in BASELINES}
METHOD_FORMS = ("baseline:<" + "|".join(BASELINE_NAMES) + ">", "zero-shot", "few-shot:K", "few-shot-calibrated:K",
                "finetune:<" + "|".join(FINETUNE_METHODS) + ">")


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
        if arg not in FINETUNE_METHODS:
            raise unknown("fine-tuning method", arg, FINETUNE_METHODS, f"{where}: {name!r}")
        return MethodSpec(name, "finetune", f"finetune:{arg}", finetune=arg)
    raise bad
