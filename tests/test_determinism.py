"""A re-run on CPU gives identical numbers: the same fine-tuning (LoRA, with dropout) and the same prompting,
run twice in one process, produce the same metrics, predictions and training losses."""

import pytest

from tasks.data.load import load_split
from tasks.data.registry import available_tasks, get_task
from tasks.evaluation.records import read_predictions
from tasks.kinds import get_kind
from tasks.methods.finetune import finetune, load_finetune_config

pytestmark = pytest.mark.usefixtures("one_thread", "shared_data")

SETTINGS = dict(max_train_examples=16, max_eval_examples=8, val_examples=4, max_steps=4, batch_size=4,
                eval_batch_size=8, max_length=96, max_target_tokens=8, progress=False, bf16=False, threads=1,
                logging_steps=1)


def _generation_task():
    for name in available_tasks():
        spec = get_task(name)
        kind = get_kind(spec.kind)
        if "lora" in kind.finetune_methods and kind.head_module is None and spec.has_split("validation"):
            return spec
    pytest.skip("no generation task spec with a validation split")


def test_lora_fine_tuning_twice_gives_identical_numbers(tiny_backbone, tmp_path):
    spec = _generation_task()
    val = load_split(spec, "validation")
    rows = {spec.train_split: val.select(range(16)), "validation": val.select(range(len(val) - 4, len(val))),
            spec.eval_split: load_split(spec, spec.eval_split).select(range(8))}
    runs = []
    for i in range(2):
        cfg = load_finetune_config(spec, "lora", overrides=SETTINGS)
        record = finetune(spec, "lora", tiny_backbone, cfg, out_dir=tmp_path / f"run{i}", runs_dir=tmp_path / f"r{i}",
                          rows=rows)
        losses = [e["loss"] for e in record.details["training"].get("log", []) if "loss" in e]
        runs.append((record.metrics, [r["prediction"] for r in read_predictions(record.predictions)], losses))
    assert runs[0] == runs[1]
