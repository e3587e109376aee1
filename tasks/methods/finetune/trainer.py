"""The Trainer set-up: transformers' Trainer whose evaluation scores the task's metrics, and its arguments.

Gradient accumulation, linear warmup/decay, evaluation (and a checkpoint) once per epoch or every `eval_steps`,
early stopping on the task's primary metric and the best checkpoint restored at the end. Under
`torchrun --nproc_per_node=N` (DDP; gloo on CPU) every process scores the same validation subset, so all agree
on early stopping.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, TrainingArguments

from tasks.data.spec import TaskSpec
from tasks.kinds import get_kind
from tasks.methods.finetune.config import FinetuneConfig


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


def use_bf16(cfg: FinetuneConfig) -> bool:
    if cfg.bf16 is not None:
        return cfg.bf16
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:  # CPUs with native bf16 (AVX512-BF16 / AMX) run autocast faster; others emulate it slowly
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
        save_total_limit=1,
        save_only_model=True,
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
                  train_ds: Any, val_ds: Any, scorer: Callable[[Any], dict[str, float]]) -> TaskTrainer:
    """A TaskTrainer for `model` on the task's training features, evaluated by `scorer` on the validation rows.
    Without progress output (`progress: false`, as the leaderboard runs it) the Trainer prints nothing: its
    PrinterCallback would print every log dict."""
    trainer = TaskTrainer(
        model=model,
        args=training_arguments(spec, cfg, checkpoints),
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=get_kind(spec.kind).collator(tokenizer),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience)],
        scorer=scorer,
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
