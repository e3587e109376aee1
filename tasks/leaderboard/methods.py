"""Method names as a config writes them (`baseline:majority`, `zero-shot`, `few-shot:4`, `finetune:lora`, ...),
parsed into what runs and how its rows are labelled."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tasks.leaderboard.errors import LeaderboardError, unknown_name
from tasks.leaderboard.tasks_api import finetune_method_names

# Config names -> tasks/baselines.py method names.
BASELINES = {"majority": "majority", "tfidf-lr": "tfidf-lr", "lead": "lead-k", "lead-k": "lead-k",
             "copy": "copy-source", "copy-source": "copy-source", "best-sentence": "best-sentence",
             "best-sentence-span": "best-sentence-span"}
_SHORT = {"lead-k": "lead", "copy-source": "copy"}  # rows use the short names
METHOD_FORMS = ("baseline:<" + "|".join(BASELINES) + ">", "zero-shot", "few-shot:K", "few-shot-calibrated:K",
                "finetune:<full|linear|lora|prompt|prefix>")


@dataclass(frozen=True)
class MethodSpec:
    """A parsed method name: what runs and how its rows are labelled."""

    name: str  # as in the config: few-shot:4
    kind: str  # baseline | fewshot | finetune
    row_method: str  # the leaderboard's method column: baseline:lead, zero-shot, few-shot, finetune:lora, ...
    shots: int | None = None
    calibrate: bool = False
    baseline: str | None = None  # tasks/baselines.py name
    finetune: str | None = None  # tasks/adapters.py name


def parse_method(name: str, where: str = "methods") -> MethodSpec:
    bad = LeaderboardError(f"{where}: unknown method {name!r}. Valid methods: {', '.join(METHOD_FORMS)}")
    if name == "zero-shot":
        return MethodSpec(name, "fewshot", "zero-shot", shots=0)
    head, _, arg = name.partition(":")
    if head == "baseline":
        if arg not in BASELINES:
            raise unknown_name("baseline", arg, list(BASELINES), f"{where}: {name!r}")
        return MethodSpec(name, "baseline", f"baseline:{_SHORT.get(arg, arg)}", baseline=BASELINES[arg])
    if head in ("few-shot", "few-shot-calibrated"):
        if not re.fullmatch(r"\d+", arg):
            raise LeaderboardError(f"{where}: {name!r} needs a number of shots, e.g. {head}:4")
        k = int(arg)
        if head == "few-shot" and k == 0:
            raise LeaderboardError(f"{where}: few-shot:0 is zero-shot; write 'zero-shot'")
        return MethodSpec(name, "fewshot", head, shots=k, calibrate=head == "few-shot-calibrated")
    if head == "finetune":
        ft_methods = finetune_method_names()
        if arg not in ft_methods:
            raise unknown_name("fine-tuning method", arg, ft_methods, f"{where}: {name!r}")
        return MethodSpec(name, "finetune", f"finetune:{arg}", finetune=arg)
    raise bad
