"""One extractive-summarization run: label sentences by the oracle, train the sentence scorer (full or LoRA), learn
the length budget, save, predict on the reported split and write a run record; and the evaluation of a saved one.

    cfg = load_finetune_config(spec, "lora", overrides={"epochs": 1, "max_train_examples": 200})
    record = finetune_extractive(spec, "lora", "results/backbones/default", cfg, ExtractiveSettings())

It applies to the summarization tasks: tasks whose rows are (`source`, `references`) and whose spec lists the
sentence-extraction baseline `lead-k` (translation tasks have the same rows but no such baseline). The record's
method is `extractive-full` / `extractive-lora`; its predictions are the chosen sentences joined by a space,
scored with the task's own metrics; each example's `details` list the chosen and the oracle sentences.
Training reads the common fine-tuning config (lr, epochs, batch size, max_length, budgets) and the method's
block (LoRA's r, targets) from the same layers as the abstractive runs.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2core.paths import REPO_ROOT
from gpt2core.typed_config import from_dict, unknown_name
from tasks.data.registry import get_task
from tasks.data.spec import TaskSpec
from tasks.errors import ConfigError, MethodError, TaskError
from tasks.evaluation.predict import eval_rows, score
from tasks.evaluation.records import RunRecord, new_record, peak_memory_mb, write_run
from tasks.kinds import get_kind
from tasks.methods import adapters
from tasks.methods.extractive.oracle import BUDGET_RULES, Budget, learn_budget, oracle, split_sentences
from tasks.methods.extractive.windows import WindowCollator, score_sentences, select, sentence_ids, window_features
from tasks.methods.finetune.config import FinetuneConfig, load_finetune_config, method_fields
from tasks.methods.finetune.run import VALIDATION, resume_point, run_rows

METHODS = ("full", "lora")
RECORD_PREFIX = "extractive-"  # the record's method: extractive-full, extractive-lora
HEAD_MODULE = "sentence_score"
EXTRACTS_WITH = "lead-k"  # a spec listing this baseline summarizes by sentences


@dataclass
class ExtractiveSettings:
    budget: str = "ratio"  # count | ratio (tasks.methods.extractive.oracle)
    context_tokens: int = 128  # preceding sentences read as context at the start of a window
    max_oracle_sentences: int | None = None  # cap on the oracle's greedy selection (None: until no gain)


SETTINGS_KEYS = tuple(f.name for f in dataclasses.fields(ExtractiveSettings))


def split_overrides(overrides: dict[str, Any] | None) -> tuple[ExtractiveSettings, dict[str, Any]]:
    """(the extractive settings among `overrides`, the rest: fine-tuning config overrides)."""
    overrides = dict(overrides or {})
    mine = {k: overrides.pop(k) for k in SETTINGS_KEYS if k in overrides}
    settings = from_dict(ExtractiveSettings, mine, "extractive")
    if settings.budget not in BUDGET_RULES:
        raise ConfigError(f"budget: {settings.budget!r} is not one of {', '.join(BUDGET_RULES)}")
    if settings.context_tokens < 0 or (settings.max_oracle_sentences is not None and settings.max_oracle_sentences < 1):
        raise ConfigError("context_tokens must be 0 or more and max_oracle_sentences at least 1 (or null)")
    return settings, overrides


def sentence_head() -> adapters.HeadChoice:
    from tasks.models.heads import GPT2ForSentenceScoring

    return adapters.HeadChoice(GPT2ForSentenceScoring, HEAD_MODULE)


def applies(spec: TaskSpec) -> str | None:
    """Why the extractive formulation does not apply to the task, or None when it does."""
    fields = get_kind(spec.kind).row_fields
    if not {"source", "references"} <= set(fields) or EXTRACTS_WITH not in spec.baselines:
        return (f"extractive summarization applies to tasks with source/references rows whose spec lists the "
                f"{EXTRACTS_WITH} baseline; {spec.name} is not one")
    return None


def check_extractive(spec: TaskSpec, method: str, split: str) -> None:
    if method not in METHODS:
        raise MethodError(str(unknown_name("extractive method", method, METHODS)))
    why = applies(spec)
    if why:
        raise MethodError(why)
    for name in (VALIDATION, split):
        if not spec.has_split(name):
            raise TaskError(str(unknown_name("split", name, spec.splits, f"task {spec.name!r}")))


@dataclass
class Articles:
    """Rows read as sentences: each article's sentences, their token ids and (when asked) the oracle's picks."""

    sentences: list[list[str]]
    ids: list[list[list[int]]]
    oracles: list[list[int]] | None

    def labels(self) -> list[list[int]]:
        assert self.oracles is not None
        return [[int(i in set(o)) for i in range(len(s))] for s, o in zip(self.sentences, self.oracles)]


def read_articles(rows: Any, tokenizer: Any, settings: ExtractiveSettings, with_oracle: bool) -> Articles:
    sentences = [split_sentences(src) for src in rows["source"]]
    ids = [sentence_ids(tokenizer, s) for s in sentences]
    oracles = None
    if with_oracle:
        oracles = [oracle(s, refs[0], settings.max_oracle_sentences) for s, refs in zip(sentences, rows["references"])]
    return Articles(sentences, ids, oracles)


def summarize(model: Any, tokenizer: Any, articles: Articles, budget: Budget, max_length: int, context_tokens: int,
              batch_size: int) -> tuple[list[str], list[list[int]]]:
    """(summaries, chosen sentence indices): the budget's number of best-scored sentences, in document order."""
    was_training = model.training
    model.eval()
    try:
        scores = score_sentences(model, tokenizer, articles.ids, max_length, context_tokens, batch_size)
    finally:
        model.train(was_training)
    chosen = [select(s, budget.sentences(len(s))) for s in scores]
    return [" ".join(sents[i] for i in c) for sents, c in zip(articles.sentences, chosen)], chosen


def _examples(spec: TaskSpec, rows: Any, articles: Articles, preds: list[str],
              chosen: list[list[int]]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    metrics, examples = score(spec, rows, preds)
    for i, ex in enumerate(examples):
        ex["details"] = {"chosen": chosen[i], "n_sentences": len(articles.sentences[i])}
        if articles.oracles is not None:
            ex["details"]["oracle"] = articles.oracles[i]
    return metrics, examples


def finetune_extractive(
    task: str | TaskSpec,
    method: str,
    model_path: str | os.PathLike,
    cfg: FinetuneConfig | None = None,
    settings: ExtractiveSettings | None = None,
    out_dir: str | os.PathLike | None = None,
    split: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    rows: dict[str, Any] | None = None,
) -> RunRecord:
    """Train the sentence scorer, save it (into `out_dir`/model), evaluate on `split` and write a run record.
    `rows` maps split names to already loaded rows (as `finetune`'s); the budgets still apply to them."""
    import torch
    from transformers import set_seed
    from datasets import Dataset

    from gpt2core.checkpoint import load_model
    from tasks.methods.finetune.trainer import build_trainer, training_log, training_seconds

    spec = get_task(task)
    split = split or spec.eval_split
    check_extractive(spec, method, split)
    cfg = cfg or load_finetune_config(spec, method)
    settings = settings or ExtractiveSettings()
    out = Path(out_dir) if out_dir is not None else (
        REPO_ROOT / "runs" / "finetune" / spec.name / f"{RECORD_PREFIX}{method}-{Path(model_path).name}-seed{cfg.seed}")
    tokenizer = adapters.tokenizer_of(model_path)
    train_rows, val_rows, val_source, test_rows = run_rows(spec, cfg, split, rows)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    head = sentence_head()
    backbone = load_model(model_path)
    model = adapters.build_model(spec, backbone, method, cfg, head)
    max_length = min(cfg.max_length, backbone.config.n_positions)

    t0 = time.perf_counter()
    train = read_articles(train_rows, tokenizer, settings, with_oracle=True)
    val = read_articles(val_rows, tokenizer, settings, with_oracle=True)
    budget = learn_budget(settings.budget, [len(o) for o in train.oracles or []], [len(s) for s in train.sentences])
    labelling_seconds = time.perf_counter() - t0
    features = [Dataset.from_dict(window_features(a.ids, a.labels(), max_length, settings.context_tokens))
                for a in (train, val)]

    def scorer(m: Any) -> dict[str, float]:
        preds, _ = summarize(m, tokenizer, val, budget, max_length, settings.context_tokens, cfg.eval_batch_size)
        return score(spec, val_rows, preds)[0]

    trainer = build_trainer(spec, model, tokenizer, cfg, out / "checkpoints", features[0], features[1], scorer,
                            collator=WindowCollator(tokenizer.pad_token_id))
    # a run killed in training resumes from its last checkpoint, as the abstractive runs do
    fingerprint = method_fields(cfg, method) | {"model": str(model_path), "split": split,
                                                "extractive": dataclasses.asdict(settings)}
    resume = resume_point(out / "checkpoints", fingerprint, cfg.resume)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_seconds = training_seconds(trainer)  # summed over the invocations of a resumed run

    model = trainer.accelerator.unwrap_model(trainer.model)
    extra = {"formulation": "extractive", "budget": budget.describe(), "max_length": max_length,
             "context_tokens": settings.context_tokens}
    adapters.save_trained(model, out / "model", spec, method, model_path, tokenizer, head, extra)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    trainable, total = adapters.count_parameters(model)

    t0 = time.perf_counter()
    test = read_articles(test_rows, tokenizer, settings, with_oracle=True)
    preds, chosen = summarize(model, tokenizer, test, budget, max_length, settings.context_tokens, cfg.eval_batch_size)
    metrics, examples = _examples(spec, test_rows, test, preds, chosen)
    eval_seconds = time.perf_counter() - t0
    oracle_preds = [" ".join(s[i] for i in o) for s, o in zip(test.sentences, test.oracles or [])]

    config = method_fields(cfg, method) | {
        "formulation": "extractive", "extractive": dataclasses.asdict(settings), "max_length_effective": max_length,
        "bf16_effective": trainer.args.bf16, "split": split, "train_examples": len(train_rows),
        "val_examples_used": len(val_rows), "val_source": val_source, "out_dir": str(out)}
    details = {"training": training_log(trainer, len(features[0])), "budget": budget.describe(),
               "labelling_seconds": round(labelling_seconds, 3),
               "train_oracle_sentences_mean": sum(map(len, train.oracles or [])) / max(1, len(train_rows)),
               "oracle_metrics": score(spec, test_rows, oracle_preds)[0]}
    record = new_record(
        spec, RECORD_PREFIX + method, model_path, split=split, metrics=metrics, n_examples=len(test_rows),
        seed=cfg.seed, config=config, trainable_params=trainable, total_params=total, train_seconds=train_seconds,
        eval_seconds=eval_seconds, peak_memory_mb=peak_memory_mb(),
        tokens_seen=int(trainer.state.num_input_tokens_seen), details=details)
    write_run(record, examples, runs_dir)
    return record


def evaluate_extractive(
    task: str | TaskSpec,
    model_path: str | os.PathLike,
    adapter: str | os.PathLike | None = None,
    split: str | None = None,
    limit: int | None = None,
    overrides: dict[str, Any] | None = None,
    runs_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    rows: Any = None,
) -> RunRecord:
    """Score a saved sentence scorer (what `finetune_extractive` wrote into <out>/model) on `split` with the
    budget and windows it was trained with, and write a record. `overrides`: eval_batch_size, threads."""
    spec = get_task(task)
    split = split or spec.eval_split
    model, tokenizer, info = adapters.load_trained(spec, model_path, adapter, device=device, head=sentence_head())
    extra = info.get("extra") or {}
    if extra.get("formulation") != "extractive":
        raise MethodError(f"{adapter or model_path} is not an extractive sentence scorer (its gpt2suite.json has no "
                          "extra.formulation 'extractive'); evaluate it with `gpt2suite eval`")
    check_extractive(spec, info["method"], split)
    cfg = load_finetune_config(spec, info["method"], overrides=overrides)
    if cfg.threads is not None:
        import torch

        torch.set_num_threads(cfg.threads)
    rows = eval_rows(spec, split, limit, rows)
    budget = Budget(**extra["budget"])
    t0 = time.perf_counter()
    articles = read_articles(rows, tokenizer, ExtractiveSettings(), with_oracle=False)
    preds, chosen = summarize(model, tokenizer, articles, budget, int(extra["max_length"]),
                              int(extra["context_tokens"]), cfg.eval_batch_size)
    metrics, examples = _examples(spec, rows, articles, preds, chosen)
    eval_seconds = time.perf_counter() - t0
    trainable, total = adapters.count_parameters(model)
    config = {"formulation": "extractive", "split": split, "limit": limit, "adapter": info["adapter"],
              "base_model": info["base_model"], "evaluated_model": str(model_path), "budget": extra["budget"],
              "max_length_effective": extra["max_length"], "context_tokens": extra["context_tokens"]}
    record = new_record(spec, RECORD_PREFIX + info["method"], info["base_model"], split=split, metrics=metrics,
                        n_examples=len(rows), seed=cfg.seed, config=config, trainable_params=trainable,
                        total_params=total, eval_seconds=eval_seconds, peak_memory_mb=peak_memory_mb())
    write_run(record, examples, runs_dir)
    return record
