"""The suite on OpenAI's GPT-2 shape: a local `GPT2LMHeadModel` folder of the `gpt2` preset (124M parameters,
50,257 tokens, 1,024 positions, OpenAI's own vocab.json + merges.txt, random weights: the hub is out of reach here)
goes through fine-tuning, few-shot prompting and a leaderboard slice from the command line, on tiny budgets.

What a user with OpenAI's weights does with `--model gpt2` (hub) or `--model <their folder>`; the closing note of
issue 11 has the time and peak memory of each step on the 2-core CPU (scripts/gpt2_shape_path.sh)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from tasks.cli.main import main

LEADERBOARD = """\
name: gpt2-shape
description: the gpt2 preset's shape through the leaderboard, tiny budgets
models:
  gpt2-random: {model}
tasks: [sst2, multi30k-en-de]
methods: [baseline:majority, few-shot:1, finetune:lora]
seeds: [0]
budgets:
  max_eval_examples: 4
  max_train_examples: 8
  max_steps: 1
  batch_size: 4
  eval_batch_size: 4
  max_length: 64
  threads: 1
"""


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory, shared_data) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt2core.config import PRESETS

    p = PRESETS["gpt2"]
    folder = tmp_path_factory.mktemp("gpt2_shape") / "gpt2-random"
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=p["n_layer"], n_embd=p["n_embd"], n_head=p["n_head"],
                                    n_positions=p["n_positions"], vocab_size=p["vocab_size"]))
    assert hf.num_parameters() == 124_439_808  # OpenAI's gpt2
    hf.half().save_pretrained(folder)  # fp16 on disk (250 MB, not 500); the suite computes in fp32
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(shared_data / "tokenizers" / "gpt2" / name, folder / name)
    return folder


def _record(runs: Path) -> dict:
    (path,) = [p for p in runs.glob("*.json") if p.name != "index.json"]
    return json.loads(path.read_text())


def test_finetune_lora_on_the_gpt2_shape(gpt2_folder, tmp_path, one_thread, capfd):
    assert main(["finetune", "--task", "sst2", "--method", "lora", "--model", str(gpt2_folder),
                 "--max-train-examples", "8", "--max-eval-examples", "4", "--max-steps", "1", "--no-progress",
                 "--out", str(tmp_path / "run"), "--runs-dir", str(tmp_path / "runs"),
                 "--set", "batch_size=4", "--set", "eval_batch_size=4", "--set", "max_length=64",
                 "--set", "val_examples=4"]) == 0
    record = _record(tmp_path / "runs")
    assert record["method"] == "lora" and record["n_examples"] == 4
    out = capfd.readouterr()
    assert "tokenizing" not in out.err + out.out  # --no-progress: no library bars either
    assert 0 <= record["metrics"]["accuracy"] <= 100


def test_fewshot_on_the_gpt2_shape(gpt2_folder, tmp_path, one_thread):
    assert main(["fewshot", "--task", "sst2", "--shots", "2", "--limit", "4", "--model", str(gpt2_folder),
                 "--runs-dir", str(tmp_path / "runs")]) == 0
    record = _record(tmp_path / "runs")
    assert record["shots"] == 2 and record["n_examples"] == 4


def test_a_leaderboard_slice_on_the_gpt2_shape(gpt2_folder, tmp_path, one_thread):
    config = tmp_path / "gpt2_shape.yaml"
    config.write_text(LEADERBOARD.format(model=gpt2_folder))
    out = tmp_path / "lb"
    assert main(["leaderboard", "--config", str(config), "--out", str(out), "--task", "sst2",
                 "--models-dir", str(tmp_path / "models")]) == 0
    rows = (out / "leaderboard.csv").read_text()
    for method in ("majority", "few-shot", "LoRA"):
        assert method.lower() in rows.lower(), (method, rows)
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json") if p.name != "index.json"]
    assert {r["task"] for r in records} == {"sst2"} and len(records) == 3
