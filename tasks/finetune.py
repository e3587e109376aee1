"""Fine-tune a backbone on a task with transformers' Trainer, then evaluate and write a run record.

    cfg = load_finetune_config("sst2", "lora", overrides={"epochs": 1, "max_train_examples": 2000})
    record = finetune("sst2", "lora", "results/backbones/default", cfg)

Config layers, later ones winning: `FinetuneConfig`'s defaults < configs/finetune/defaults.yaml < the task's
file (configs/finetune/<task>.yaml, or `--config`) < overrides (CLI flags, `--set`). A YAML file holds config keys
at the top level and per-method keys under `methods: {lora: {...}, ...}`; an unknown key or a wrong type is an
error that names the key and the file.

Training: Trainer with gradient accumulation, linear warmup/decay, evaluation on a seeded subset of the
`validation` split (task metrics, by generation for translation/summarization and span postprocessing for QA),
early stopping on the task's primary metric and the best checkpoint restored at the end. Runs under
`torchrun --nproc_per_node=N` (DDP; gloo on CPU) unchanged: every process scores the same validation subset, so
all agree on early stopping; only the first process saves, evaluates on the reported split and writes the record.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tasks.registry import REPO_ROOT, TaskSpec, get_task, load_split

logger = logging.getLogger(__name__)

CONFIG_DIR = REPO_ROOT / "configs" / "finetune"
DEFAULT_MODEL = REPO_ROOT / "results" / "backbones" / "default"


class FinetuneConfigError(ValueError):
    """A fine-tuning config that cannot be used as written."""


@dataclass
class FinetuneConfig:
    # optimisation
    lr: float = 5e-5
    weight_decay: float = 0.0
    batch_size: int = 16  # per device
    grad_accum: int = 1
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    warmup: float = 0.06  # < 1: fraction of the optimizer steps; >= 1: steps
    lr_scheduler: str = "linear"
    max_grad_norm: float = 1.0
    bf16: bool | None = None  # None: when the device supports it
    # inputs
    max_length: int = 256  # tokens per input; capped at the model's n_positions
    doc_stride: int = 128  # QA windows overlap
    max_answer_length: int = 30  # QA, tokens
    n_best: int = 20  # QA
    keep_source: str = "start"  # generation: which part of a long source survives truncation ("start" | "end")
    max_target_tokens: int | None = None  # generation: training targets / generated tokens (default: the task's)
    num_beams: int = 1  # generation at evaluation: 1 = greedy
    # evaluation and budgets
    eval_batch_size: int = 32
    eval_steps: int | None = None  # None: evaluate (and checkpoint) once per epoch
    val_examples: int = 500  # seeded subset of the validation split scored during training
    early_stopping_patience: int = 3  # evaluations without improvement of the primary metric
    max_train_examples: int | None = None  # seeded subset of the training split
    max_eval_examples: int | None = None  # first N of a fixed shuffle of the reported split
    logging_steps: int = 10
    seed: int = 42
    progress: bool = True
    threads: int | None = None  # torch CPU threads (None: torch's choice; 1 is far faster on a busy machine)
    # adapters
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["c_attn"])  # defaults.yaml: every linear layer
    num_virtual_tokens: int = 20
    prefix_projection: bool = False


def _check_layer(data: Any, source: str, allow_methods: bool = True) -> dict[str, Any]:
    """Type-check one YAML layer against `FinetuneConfig` (errors name the key and the file)."""
    from gpt2core.pretrain.config import ConfigError, _from_dict

    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FinetuneConfigError(f"{source}: expected a mapping of config keys, got {type(data).__name__}")
    data = dict(data)
    methods = data.pop("methods", {}) if allow_methods else {}
    try:
        _from_dict(FinetuneConfig, data, "")
    except ConfigError as e:
        raise FinetuneConfigError(f"{source}: {e}") from None
    if not isinstance(methods, dict):
        raise FinetuneConfigError(f"{source}: 'methods' must map method names to config keys")
    from tasks.adapters import METHODS

    for name, layer in methods.items():
        if name not in METHODS:
            raise FinetuneConfigError(f"{source}: unknown method {name!r} under 'methods' (known: {', '.join(METHODS)})")
        _check_layer(layer, f"{source} (methods.{name})", allow_methods=False)
    return {"common": data, "methods": methods}


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise FinetuneConfigError(f"{path}: not valid YAML ({e})") from None
    return _check_layer(data, str(path))


def load_finetune_config(
    task: str | TaskSpec,
    method: str,
    config_path: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    config_dir: str | os.PathLike = CONFIG_DIR,
) -> FinetuneConfig:
    """The resolved config for `task` and `method` (see the module docstring for the layers)."""
    from gpt2core.pretrain.config import ConfigError, _from_dict

    spec = get_task(task) if isinstance(task, str) else task
    config_dir = Path(config_dir)
    files = [config_dir / "defaults.yaml"]
    if config_path is not None:
        if not Path(config_path).is_file():
            raise FileNotFoundError(f"fine-tuning config {config_path} does not exist (see {CONFIG_DIR}/*.yaml)")
        files.append(Path(config_path))
    else:
        files.append(config_dir / f"{spec.name}.yaml")
    merged: dict[str, Any] = {}
    for path in files:
        if path.is_file():
            layer = _read_yaml(path)
            merged.update(layer["common"])
            merged.update(layer["methods"].get(method) or {})
    over = _check_layer(dict(overrides or {}), "overrides", allow_methods=False)["common"]
    merged.update(over)
    try:
        cfg = _from_dict(FinetuneConfig, merged, "")
    except ConfigError as e:  # pragma: no cover - every layer was checked above
        raise FinetuneConfigError(str(e)) from None
    _validate(cfg)
    return cfg


def _validate(cfg: FinetuneConfig) -> None:
    for name in ("batch_size", "grad_accum", "eval_batch_size", "max_length", "val_examples", "logging_steps",
                 "lora_r", "num_virtual_tokens", "num_beams", "n_best", "max_answer_length"):
        if getattr(cfg, name) < 1:
            raise FinetuneConfigError(f"{name}: must be at least 1, got {getattr(cfg, name)}")
    for name in ("max_train_examples", "max_eval_examples", "eval_steps", "max_target_tokens", "threads"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise FinetuneConfigError(f"{name}: must be at least 1 (or null), got {getattr(cfg, name)}")
    if cfg.lr <= 0 or cfg.epochs <= 0 or cfg.warmup < 0:
        raise FinetuneConfigError("lr and epochs must be positive and warmup not negative")
    if cfg.keep_source not in ("start", "end"):
        raise FinetuneConfigError(f"keep_source: {cfg.keep_source!r} is not 'start' or 'end'")


# ---- data ------------------------------------------------------------------------------------------------


def _subset(rows: Any, n: int | None, seed: int) -> Any:
    """A seeded random subset of `n` rows (all rows, shuffled, when n is None or larger)."""
    rows = rows.shuffle(seed=seed)
    return rows.select(range(min(n, len(rows)))) if n is not None else rows


def eval_rows(task: TaskSpec, split: str, limit: int | None, rows: Any = None) -> Any:
    """The rows scores are reported on: the first `limit` of a fixed shuffle (seed 0), the same for every run, so
    budget-limited scores of different methods and seeds compare on the same examples."""
    rows = rows if rows is not None else load_split(task, split)
    return rows if limit is None or limit >= len(rows) else _subset(rows, limit, 0)


def train_features(task: TaskSpec, rows: Any, tokenizer: Any, cfg: FinetuneConfig, max_length: int) -> Any:
    from tasks import features

    if task.kind == "classification":
        return features.classification_features(rows, tokenizer, task, max_length)
    if task.kind == "qa":
        return features.qa_train_features(rows, tokenizer, task, max_length, cfg.doc_stride)
    return features.generation_train_features(rows, tokenizer, task, max_length, max_target_tokens(task, cfg),
                                              cfg.keep_source)


def max_target_tokens(task: TaskSpec, cfg: FinetuneConfig) -> int:
    return cfg.max_target_tokens or task.max_target_tokens


def predict_settings(task: TaskSpec, cfg: FinetuneConfig, max_length: int, reserved: int) -> Any:
    from tasks.predict import PredictSettings

    return PredictSettings(max_length=max_length, batch_size=cfg.eval_batch_size, doc_stride=cfg.doc_stride,
                           max_answer_length=cfg.max_answer_length, n_best=cfg.n_best, num_beams=cfg.num_beams,
                           max_new_tokens=max_target_tokens(task, cfg), keep_source=cfg.keep_source,
                           reserved_positions=reserved)


def _collator(task: TaskSpec, tokenizer: Any) -> Any:
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

    if task.kind == "generation":
        # Pads labels with -100 as well; works for decoder-only inputs too.
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)
    return DataCollatorWithPadding(tokenizer)


def _bf16(cfg: FinetuneConfig) -> bool:
    import torch

    if cfg.bf16 is not None:
        return cfg.bf16
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:  # CPUs with native bf16 (AVX512-BF16 / AMX) run autocast faster; others emulate it slowly
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# ---- training --------------------------------------------------------------------------------------------


def _task_trainer_class() -> type:
    from transformers import Trainer

    class TaskTrainer(Trainer):
        """Evaluation adds the task's metrics (by prediction, as the final evaluation computes them) to the loss,
        as run_qa.py's QuestionAnsweringTrainer does, so early stopping and best-model selection use them."""

        def __init__(self, *args: Any, scorer: Callable[[Any], dict[str, float]], **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.scorer = scorer

        def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval"):
            dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
            output = self.evaluation_loop(self.get_eval_dataloader(dataset), description="Evaluation",
                                          prediction_loss_only=True, ignore_keys=ignore_keys,
                                          metric_key_prefix=metric_key_prefix)
            metrics = dict(output.metrics)
            scores = self.scorer(self.accelerator.unwrap_model(self.model))
            metrics.update({f"{metric_key_prefix}_{k}": v for k, v in scores.items()})
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    return TaskTrainer


def default_out_dir(task: TaskSpec, method: str, model_path: str | os.PathLike, seed: int) -> Path:
    return REPO_ROOT / "runs" / "finetune" / task.name / f"{method}-{Path(model_path).name}-seed{seed}"


def finetune(
    task: str | TaskSpec,
    method: str,
    model_path: str | os.PathLike = DEFAULT_MODEL,
    cfg: FinetuneConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    split: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    rows: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Train, save (into `out_dir`/model), evaluate on `split` (default: the task's eval split) and write a run
    record (into `runs_dir`, default results/runs). Returns the record (None on non-main DDP processes).

    `rows` maps split names to already loaded rows (tests, notebooks) used instead of `load_split`; the
    budgets (max_train_examples, val_examples, max_eval_examples) still apply to them."""
    import torch
    from transformers import EarlyStoppingCallback, TrainingArguments, set_seed

    from gpt2core.checkpoint import load_model
    from gpt2core.tokenizer import load_tokenizer
    from tasks import adapters, records
    from tasks.predict import predict, score

    spec = get_task(task) if isinstance(task, str) else task
    adapters.check_method(spec, method)
    cfg = cfg or load_finetune_config(spec, method)
    split = split or spec.eval_split
    out = Path(out_dir) if out_dir is not None else default_out_dir(spec, method, model_path, cfg.seed)

    # Everything that can fail on bad input happens before training starts and before anything is written.
    tokenizer = load_tokenizer(model_path)  # first: a wrong --model fails at once, not after loading data
    rows = rows or {}

    def split_rows(name: str) -> Any:
        return rows[name] if rows.get(name) is not None else load_split(spec, name)

    train_rows = _subset(split_rows(spec.train_split), cfg.max_train_examples, cfg.seed)
    val_rows = _subset(split_rows("validation"), cfg.val_examples, cfg.seed)
    test_rows = eval_rows(spec, split, cfg.max_eval_examples, split_rows(split))
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    backbone = load_model(model_path)
    model = adapters.build_model(spec, backbone, method, cfg)
    reserved = adapters.n_virtual_tokens(model)
    max_length = min(cfg.max_length, backbone.config.n_positions) - reserved
    train_ds = train_features(spec, train_rows, tokenizer, cfg, max_length)
    val_ds = train_features(spec, val_rows, tokenizer, cfg, max_length)
    settings = predict_settings(spec, cfg, max_length + reserved, reserved)

    def scorer(m: Any) -> dict[str, float]:
        return score(spec, val_rows, predict(spec, m, tokenizer, val_rows, settings))[0]

    use_cpu = not torch.cuda.is_available()
    per_epoch = cfg.eval_steps is None
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        warmup_steps=cfg.warmup,
        lr_scheduler_type=cfg.lr_scheduler,
        max_grad_norm=cfg.max_grad_norm,
        eval_strategy="epoch" if per_epoch else "steps",
        save_strategy="epoch" if per_epoch else "steps",
        eval_steps=None if per_epoch else cfg.eval_steps,
        save_steps=None if per_epoch else cfg.eval_steps,
        save_total_limit=1,
        save_only_model=True,
        load_best_model_at_end=True,
        metric_for_best_model=spec.primary_metric,
        greater_is_better=True,
        logging_steps=cfg.logging_steps,
        report_to=[],
        use_cpu=use_cpu,
        bf16=_bf16(cfg),
        seed=cfg.seed,
        data_seed=cfg.seed,
        disable_tqdm=not cfg.progress,
        remove_unused_columns=False,
        label_names=["start_positions", "end_positions"] if spec.kind == "qa" else ["labels"],
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
    )
    trainer = _task_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=_collator(spec, tokenizer),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience)],
        scorer=scorer,
    )
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0
    if not trainer.is_world_process_zero():
        return None

    model = trainer.accelerator.unwrap_model(trainer.model)
    adapters.save_trained(model, out / "model", spec, method, model_path, tokenizer)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the best checkpoint is what was just saved
    trainable, total = adapters.count_parameters(model)

    t0 = time.perf_counter()
    predictions = predict(spec, model, tokenizer, test_rows, settings)
    metrics, per_example = score(spec, test_rows, predictions)
    eval_seconds = time.perf_counter() - t0

    # The config as it ran (budgets included), and what training did (outside the config: it is an outcome).
    resolved = dataclasses.asdict(cfg) | {"max_length_effective": max_length, "bf16_effective": args.bf16,
                                         "split": split, "train_examples": len(train_rows),
                                         "val_examples_used": len(val_rows), "out_dir": str(out),
                                         "world_size": args.world_size}
    training = {"global_steps": trainer.state.global_step, "train_features": len(train_ds),
                "best_val_metric": trainer.state.best_metric, "best_checkpoint": trainer.state.best_model_checkpoint,
                "epochs_run": trainer.state.epoch,
                "log": [e for e in trainer.state.log_history if any(k.startswith("eval_") for k in e)]}
    record = records.make_record(
        task=spec, method=method, model_path=model_path, split=split, n_examples=len(test_rows), metrics=metrics,
        predictions=None, seed=cfg.seed, config=resolved, trainable_params=trainable, total_params=total,
        train_seconds=train_seconds, eval_seconds=eval_seconds, peak_memory_mb=records.peak_memory_mb(),
        tokens_seen=int(trainer.state.num_input_tokens_seen), extra={"training": training},
    )
    path = records.write_run(record, per_example, runs_dir=runs_dir)
    record = records.read_record(path)
    record["_path"] = str(path)
    return record
