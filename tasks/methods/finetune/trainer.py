"""The Trainer set-up: transformers' Trainer whose evaluation scores the task's metrics, and its arguments.

Gradient accumulation, linear warmup/decay, evaluation (and a checkpoint) once per epoch or every `eval_steps`,
early stopping on the task's primary metric and the best checkpoint restored at the end. Under
`torchrun --nproc_per_node=N` (DDP; gloo on CPU) every process scores the same validation subset, so all agree
on early stopping.

Resumable: a full checkpoint (model, optimizer, scheduler, RNG, trainer state with the best checkpoint and the
early-stopping counter) at every evaluation and at least every `checkpoint_minutes` of training; only the newest
and the best are kept. Batches are grouped by length (`group_by_length`) with a per-epoch seed, so a resumed run
sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ExportableState
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from tasks.data.spec import TaskSpec
from tasks.kinds import get_kind
from tasks.methods.finetune.config import FinetuneConfig


class EpochSeededLengthSampler(LengthGroupedSampler):
    """transformers' length-grouped order (megabatches of 50 batches sorted longest first, in random order),
    drawn from `seed + epoch` instead of the global RNG, so the order of an epoch does not depend on what ran
    before it (a resumed run skips exactly the batches an uninterrupted run trained on)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:  # accelerate's dataloader calls it at every epoch
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=g))


class TimedCheckpoints(TrainerCallback):
    """A checkpoint at least every `minutes` of training, on top of the one at each evaluation, so that a killed
    run loses at most that much. (Checkpoints are rotated by the Trainer: the newest and the best are kept.)"""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60
        self.last = time.monotonic()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last = time.monotonic()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if time.monotonic() - self.last >= self.seconds:
            control.should_save = True
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last = time.monotonic()


class TrainClock(TrainerCallback, ExportableState):
    """Training seconds summed over every invocation of a resumed run, kept in each checkpoint's trainer state
    (the Trainer's own runtime counts only the last invocation). The time a killed run spent after its last
    checkpoint is not counted: a resumed run trains those steps again."""

    def __init__(self, seconds_before: float = 0.0):
        self.seconds_before = seconds_before
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def state(self) -> dict[str, Any]:
        return {"args": {"seconds_before": self.seconds()}, "attributes": {}}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # after a checkpoint is restored (the Trainer rebuilds this callback from it just before this call); a
        # checkpoint written before this callback existed has no entry, which the Trainer's save would miss
        self.started = time.perf_counter()
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())


def training_seconds(trainer: Trainer) -> float:
    """The run's training seconds over all its invocations (see TrainClock)."""
    return next(c for c in trainer.callback_handler.callbacks if isinstance(c, TrainClock)).seconds()


class TaskTrainer(Trainer):
    """Evaluation adds the task's metrics (by prediction, as the final evaluation computes them) to the loss,
    as run_qa.py's QuestionAnsweringTrainer does, so early stopping and best-model selection use them."""

    def __init__(self, *args: Any, scorer: Callable[[Any], dict[str, float]], group_by_length: bool = False,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.scorer = scorer
        self.group_by_length = group_by_length

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.group_by_length:
            return super()._get_train_sampler(train_dataset)
        lengths = [len(ids) for ids in dataset["input_ids"]]  # one column read, not one row at a time
        return EpochSeededLengthSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        lengths, self.args.data_seed)

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


def use_bf16(cfg: FinetuneConfig) -> bool:
    if cfg.bf16 is not None:
        return cfg.bf16
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return native_cpu_bf16()


def native_cpu_bf16() -> bool:
    """CPUs with native bf16 (AVX512-BF16 / AMX) run autocast faster; others emulate it slowly. oneDNN's own
    check (`_is_mkldnn_bf16_supported`) also says yes on plain AVX-512, where bf16 training measured ~10x slower
    than fp32 (bench/finetune.py, 2026-12-02), so on Linux the CPU's flags decide."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        flags = None
    if flags is not None:
        return "avx512_bf16" in flags or "amx_bf16" in flags
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def training_arguments(spec: TaskSpec, cfg: FinetuneConfig, checkpoints: Path) -> TrainingArguments:
    per_epoch = cfg.eval_steps is None
    return TrainingArguments(
        output_dir=str(checkpoints),
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
        save_total_limit=1,  # the newest checkpoint; the Trainer keeps the best one too
        save_only_model=False,  # optimizer, scheduler and RNG states: what resuming needs
        restore_callback_states_from_checkpoint=True,  # the early-stopping counter survives a resume
        load_best_model_at_end=True,
        metric_for_best_model=spec.primary_metric,
        greater_is_better=True,
        logging_steps=cfg.logging_steps,
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        bf16=use_bf16(cfg),
        seed=cfg.seed,
        data_seed=cfg.seed,
        disable_tqdm=not cfg.progress,
        remove_unused_columns=False,
        label_names=list(get_kind(spec.kind).trainer_label_names),
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
    )


def build_trainer(spec: TaskSpec, model: Any, tokenizer: Any, cfg: FinetuneConfig, checkpoints: Path,
                  train_ds: Any, val_ds: Any, scorer: Callable[[Any], dict[str, float]],
                  collator: Any = None) -> TaskTrainer:
    """A TaskTrainer for `model` on the task's training features, evaluated by `scorer` on the validation rows.
    `collator`: the task kind's unless given (the extractive sentence scorer batches windows). Without progress
    output (`progress: false`, as the leaderboard runs it) the Trainer prints nothing: its PrinterCallback would
    print every log dict."""
    trainer = TaskTrainer(
        model=model,
        args=training_arguments(spec, cfg, checkpoints),
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=collator if collator is not None else get_kind(spec.kind).collator(tokenizer),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience),
                   TimedCheckpoints(cfg.checkpoint_minutes), TrainClock()],
        scorer=scorer,
        group_by_length=cfg.group_by_length,
    )
    if not cfg.progress:
        trainer.remove_callback(PrinterCallback)
    return trainer


def training_log(trainer: TaskTrainer, n_features: int) -> dict[str, Any]:
    """What training did (an outcome, so outside the config): steps, the best validation score, evaluations."""
    state = trainer.state
    return {"global_steps": state.global_step, "train_features": n_features, "best_val_metric": state.best_metric,
            "best_checkpoint": state.best_model_checkpoint, "epochs_run": state.epoch,
            "log": [e for e in state.log_history if any(k.startswith("eval_") for k in e)]}
