"""The task registry: every task is data (a `TaskSpec`), loaded into one row layout per kind.

Row layouts after loading (what heads, prompts, metrics and baselines read):
- classification: `id`, `text`, `label` (int index into `label_names`)
- qa:             `id`, `question`, `context`, `answers` ({"text": [...], "answer_start": [...]})
- generation:     `id`, `source`, `references` (list of gold targets; the first is the training target)

Data comes from the local mirror when `GPT2SUITE_DATA_DIR` (or `data_dir=`) is set or the project's shared
data folder exists, else from the Hugging Face Hub (users with network access).
"""

from __future__ import annotations

import difflib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# One rule for BBC News' split, shared with pretraining so that its corpus never holds validation/test text.
from gpt2core.pretrain.corpus import bbc_news_split

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


class TaskError(ValueError):
    """A task, split or dataset that does not exist or cannot be used as asked."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # "classification" | "qa" | "generation"
    version: str
    local_dir: str  # under the data dir: <local_dir>/<split>.jsonl.gz
    hub: tuple[str, str | None]  # (dataset path, config) for load_dataset
    train_split: str
    eval_split: str  # the split scores are reported on
    to_row: Callable[[dict[str, Any], int], dict[str, Any]]  # raw local record -> row layout above
    label_names: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    primary_metric: str = ""
    # Conditional LM format for generation tasks: source + separator + target + EOS.
    separator: str = ""
    # Prompt template pieces for few-shot prompting.
    prompt: dict[str, str] = field(default_factory=dict)
    # Splits that do not exist upstream and are cut from another split by a fixed, seeded rule.
    derived_splits: dict[str, str] = field(default_factory=dict)
    max_target_tokens: int = 64


def _sst2_row(r: dict[str, Any], i: int) -> dict[str, Any]:
    return {"id": str(r["idx"]), "text": r["sentence"].strip(), "label": int(r["label"])}


def _trec_row(r: dict[str, Any], i: int) -> dict[str, Any]:
    return {"id": str(i), "text": r["text"].strip(), "label": int(r["coarse_label"])}


def _squad_row(r: dict[str, Any], i: int) -> dict[str, Any]:
    return {"id": r["id"], "question": r["question"].strip(), "context": r["context"], "answers": r["answers"]}


def _translation_row(src: str, tgt: str) -> Callable[[dict[str, Any], int], dict[str, Any]]:
    def row(r: dict[str, Any], i: int) -> dict[str, Any]:
        return {"id": str(i), "source": r["translation"][src].strip(), "references": [r["translation"][tgt].strip()]}

    return row


def _scitldr_row(r: dict[str, Any], i: int) -> dict[str, Any]:
    refs = [t.strip() for t in (r.get("target") or [r["summary"]]) if t.strip()]
    return {"id": r["paper_id"], "source": r["document"].strip(), "references": refs}


def _bbc_row(r: dict[str, Any], i: int) -> dict[str, Any]:
    return {"id": r["id"], "source": " ".join(r["document"].split()), "references": [" ".join(r["summary"].split())]}


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec(
            name="sst2", kind="classification", version="1", local_dir="classification/sst2",
            hub=("nyu-mll/glue", "sst2"), train_split="train", eval_split="validation", to_row=_sst2_row,
            label_names=("negative", "positive"), metrics=("accuracy", "f1"), primary_metric="accuracy",
            prompt={"instruction": "", "input": "Review: {text}\nSentiment:", "answer": " {label}"},
        ),
        TaskSpec(
            name="trec", kind="classification", version="1", local_dir="classification/trec",
            hub=("CogComp/trec", None), train_split="train", eval_split="test", to_row=_trec_row,
            label_names=("abbreviation", "entity", "description", "human", "location", "number"),
            metrics=("accuracy", "macro_f1"), primary_metric="accuracy",
            prompt={"instruction": "", "input": "Question: {text}\nType:", "answer": " {label}"},
        ),
        TaskSpec(
            name="squad", kind="qa", version="1", local_dir="qa/squad",
            hub=("rajpurkar/squad", None), train_split="train", eval_split="validation", to_row=_squad_row,
            metrics=("exact_match", "f1"), primary_metric="f1",
            prompt={"instruction": "", "input": "{context}\nQ: {question}\nA:", "answer": " {answer}"},
            max_target_tokens=24,
        ),
        TaskSpec(
            name="multi30k-en-de", kind="generation", version="1", local_dir="translation/multi30k_en_de",
            hub=("bentrevett/multi30k", None), train_split="train", eval_split="test",
            to_row=_translation_row("en", "de"), metrics=("bleu", "chrf"), primary_metric="bleu", separator=" = ",
            prompt={"instruction": "", "input": "English: {source} = German:", "answer": " {target}"},
        ),
        TaskSpec(
            name="multi30k-en-fr", kind="generation", version="1", local_dir="translation/multi30k_en_fr",
            hub=("multi30k/multi30k-en-fr", None), train_split="train", eval_split="test",
            to_row=_translation_row("en", "fr"), metrics=("bleu", "chrf"), primary_metric="bleu", separator=" = ",
            prompt={"instruction": "", "input": "English: {source} = French:", "answer": " {target}"},
        ),
        TaskSpec(
            name="scitldr", kind="generation", version="1", local_dir="summarization/scitldr",
            hub=("allenai/scitldr", "Abstract"), train_split="train", eval_split="test", to_row=_scitldr_row,
            metrics=("rouge1", "rouge2", "rougeL"), primary_metric="rougeL", separator=" TL;DR:",
            prompt={"instruction": "", "input": "{source} TL;DR:", "answer": " {target}"},
        ),
        TaskSpec(
            name="bbc-news", kind="generation", version="1", local_dir="summarization/bbc_news_summary",
            hub=("gopalkalpande/bbc-news-summary", None), train_split="train", eval_split="test", to_row=_bbc_row,
            metrics=("rouge1", "rouge2", "rougeL"), primary_metric="rougeL", separator=" TL;DR:",
            prompt={"instruction": "", "input": "{source} TL;DR:", "answer": " {target}"},
            derived_splits={"train": "train", "validation": "train", "test": "train"}, max_target_tokens=128,
        ),
    ]
}


def get_task(name: str) -> TaskSpec:
    """The task called `name`; an unknown name lists the close matches and all known tasks."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise TaskError(f"unknown task {name!r}.{hint} Known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The local mirror to read, or None to use the hub: `explicit`, then GPT2SUITE_DATA_DIR, then shared/data."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get("GPT2SUITE_DATA_DIR"):
        return Path(os.environ["GPT2SUITE_DATA_DIR"])
    return DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    from datasets import load_dataset

    return list(load_dataset("json", data_files=str(path), split="train"))


def load_split(task: str | TaskSpec, split: str, data_dir_: str | os.PathLike | None = None) -> "Any":
    """One split of a task as a `datasets.Dataset` in the task kind's row layout.

    Use `validation` for model selection and `task.eval_split` for reported scores. For tasks without a
    validation split upstream (TREC), `validation` is a fixed, seeded 10% of train and `train` the rest.
    """
    from datasets import Dataset

    spec = get_task(task) if isinstance(task, str) else task
    root = data_dir(data_dir_)
    if root is None:
        return _load_from_hub(spec, split)
    source_split = spec.derived_splits.get(split, split)
    if spec.name == "trec" and split in ("train", "validation"):
        source_split = "train"
    path = root / spec.local_dir / f"{source_split}.jsonl.gz"
    if not path.exists():
        available = sorted(p.name.split(".")[0] for p in (root / spec.local_dir).glob("*.jsonl.gz"))
        raise TaskError(
            f"dataset {spec.name!r} split {split!r} not found in the local mirror {root} (looked for {path}; "
            f"splits there: {available or 'none'}); set GPT2SUITE_DATA_DIR to a mirror that has it, or unset "
            f"it and run with network access to use the hub dataset {spec.hub[0]!r}"
        )
    rows = [spec.to_row(r, i) for i, r in enumerate(_read_jsonl(path))]
    if spec.name == "bbc-news":
        rows = [r for r in rows if bbc_news_split(r["id"]) == split]
    elif spec.name == "trec" and split in ("train", "validation"):
        rows = [r for r in rows if (_stable_bucket(r["text"]) == 0) == (split == "validation")]
    if not rows:
        raise TaskError(f"split {split!r} of task {spec.name!r} is empty ({path})")
    return Dataset.from_list(rows)


def _stable_bucket(key: str, buckets: int = 10) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % buckets


def _load_from_hub(spec: TaskSpec, split: str) -> "Any":
    from datasets import load_dataset

    try:
        ds = load_dataset(spec.hub[0], spec.hub[1], split=split)
    except Exception as e:  # the hub client raises many types; all mean "not available here"
        raise TaskError(
            f"dataset {spec.name!r} split {split!r}: no local mirror (GPT2SUITE_DATA_DIR unset and "
            f"{DEFAULT_DATA_DIR} missing) and the hub dataset {spec.hub[0]!r} could not be loaded ({e}); "
            "set GPT2SUITE_DATA_DIR or run with network access"
        ) from e
    return ds.map(lambda r, i: spec.to_row(r, i), with_indices=True, remove_columns=ds.column_names)
