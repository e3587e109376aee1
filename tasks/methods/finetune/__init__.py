"""Fine-tuning a backbone on a task with transformers' Trainer, then evaluating it and writing a run record.

- `config`:  FinetuneConfig (common fields + one settings block per PEFT method), its layers, `method_fields`.
- `trainer`: the TaskTrainer and its TrainingArguments (imports torch and transformers).
- `run`:     `finetune(...)`, one run from data to record.
"""

from tasks.methods.finetune.config import (FinetuneConfig, LoraSettings, PrefixSettings, PromptSettings,
                                           load_finetune_config, method_fields, predict_settings)
from tasks.methods.finetune.run import DEFAULT_MODEL, default_out_dir, finetune

__all__ = ["DEFAULT_MODEL", "FinetuneConfig", "LoraSettings", "PrefixSettings", "PromptSettings", "default_out_dir",
           "finetune", "load_finetune_config", "method_fields", "predict_settings"]
