"""Fine-tuning pipelines on the tiny backbone: every task x method end to end, overfitting checks, records whose
metrics match a direct computation, save/reload, and clear errors for bad input."""

import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from tasks import adapters, features, finetune_cli
from tasks.finetune import FinetuneConfigError, finetune, load_finetune_config
from tasks.registry import TASKS, TaskError, get_task, load_split

REPO = Path(__file__).resolve().parents[1]

# A few examples, a couple of steps: the point is that every stage runs, not what it scores.
TINY = dict(max_train_examples=8, max_eval_examples=4, val_examples=4, max_steps=2, batch_size=4, eval_batch_size=8,
            max_length=128, doc_stride=32, max_target_tokens=8, progress=False, bf16=False, threads=1,
            logging_steps=1000)

# Unmarked runs cover every method and every task once; the slow marker adds the rest of the matrix.
FAST_CASES = {("sst2", m) for m in adapters.METHODS} | {
    ("trec", "linear"), ("squad", "full"), ("squad", "prompt"), ("squad", "lora"), ("multi30k-en-de", "prefix"),
    ("multi30k-en-fr", "lora"), ("scitldr", "full"), ("bbc-news", "prompt"),
}
ALL_CASES = [(t, m) for t in TASKS for m in adapters.applicable_methods(TASKS[t])]


pytestmark = pytest.mark.usefixtures("one_thread")


@lru_cache(maxsize=None)
def _split(task: str, split: str):
    return load_split(task, split)


def small_rows(task: str, n_train: int = 8, n_eval: int = 8) -> dict:
    """A few real rows per split. SQuAD's 87k-row train file takes ~20 s to load, so its validation split
    (disjoint examples of the same kind) stands in for train here."""
    spec = get_task(task)
    train_split = "validation" if task == "squad" else spec.train_split
    val = _split(task, "validation")
    return {
        spec.train_split: _split(task, train_split).select(range(n_train)),
        "validation": val.select(range(len(val) - n_eval, len(val))),
        spec.eval_split: _split(task, spec.eval_split).select(range(n_eval)),
    }


def recompute(record: dict) -> tuple[dict, list]:
    from tasks.metrics import compute_metrics
    from tasks.records import read_predictions

    rows = read_predictions(record["predictions"])
    task = get_task(record["task"])
    return compute_metrics(task, [r["prediction"] for r in rows], [r["references"] for r in rows]), rows


def run(task, method, backbone, tmp_path, rows=None, split=None, **overrides):
    cfg = load_finetune_config(task, method, overrides={**TINY, **overrides})
    return finetune(task, method, backbone, cfg, out_dir=tmp_path / "run", runs_dir=tmp_path / "records",
                    rows=rows if rows is not None else small_rows(task), split=split)


def _case_params(cases):
    return [pytest.param(t, m, marks=() if (t, m) in FAST_CASES else pytest.mark.slow, id=f"{t}-{m}")
            for t, m in cases]


@pytest.mark.parametrize("task,method", _case_params(ALL_CASES))
def test_pipeline_end_to_end(task, method, tiny_backbone, tmp_path):
    from tasks.predict import evaluate
    from tasks.records import RECORD_KEYS

    rows_by_split = small_rows(task)
    rec = run(task, method, tiny_backbone, tmp_path, rows=rows_by_split)
    spec = get_task(task)
    assert set(RECORD_KEYS) <= set(rec)
    assert rec["task"] == task and rec["method"] == method and rec["split"] == spec.eval_split
    assert rec["n_examples"] == 4 and set(rec["metrics"]) == set(spec.metrics)
    assert rec["config"]["max_train_examples"] == 8 and rec["config"]["max_steps"] == 2
    assert rec["training"]["global_steps"] == 2
    assert rec["tokens_seen"] > 0 and rec["train_seconds"] > 0 and rec["peak_memory_mb"] > 0
    assert (rec["trainable_params"] == rec["total_params"]) == (method == "full")
    # The record's metrics are what the library computes from the written predictions.
    direct, rows = recompute(rec)
    assert rec["metrics"] == pytest.approx(direct)
    assert len(rows) == 4 and all({"id", "prediction", "references"} <= set(r) for r in rows)
    # The saved model (adapter + head, head alone, or whole model) reloads to the same predictions.
    again = evaluate(task, str(tmp_path / "run" / "model"), runs_dir=str(tmp_path / "records"),
                     overrides={k: TINY[k] for k in ("max_length", "doc_stride", "max_target_tokens", "threads")},
                     limit=4, split=spec.eval_split, rows=rows_by_split[spec.eval_split])
    assert [r["prediction"] for r in recompute(again)[1]] == [r["prediction"] for r in rows]
    assert again["method"] == method and again["metrics"] == rec["metrics"]


@pytest.mark.parametrize("method", ["lora", "prompt", "prefix", "linear"])
def test_reloaded_adapter_predicts_the_same(method, tiny_backbone, tmp_path):
    """A trained adapter (or head) saved and loaded on a fresh backbone gives identical logits; a head that was
    not saved would be re-initialised at random and would not."""
    from tasks.predict import PredictSettings, predict

    rec = run("sst2", method, tiny_backbone, tmp_path, lr=5e-2, max_steps=3)
    model, tok, info = adapters.load_trained(get_task("sst2"), tmp_path / "run" / "model")
    assert info["method"] == method and info["base_model"] == str(tiny_backbone)
    model2, _, _ = adapters.load_trained(get_task("sst2"), tiny_backbone, adapter=tmp_path / "run" / "model")
    ids = tok(["a fine film", "dull and slow , it never works"], return_tensors="pt", padding=True)
    with torch.no_grad():
        a = model(**ids).logits
        b = model2(**ids).logits
    assert torch.allclose(a, b)
    rows = small_rows("sst2")["validation"]
    assert predict(get_task("sst2"), model, tok, rows, PredictSettings(max_length=128, reserved_positions=adapters.n_virtual_tokens(model))) \
        == predict(get_task("sst2"), model2, tok, rows, PredictSettings(max_length=128, reserved_positions=adapters.n_virtual_tokens(model2)))
    assert rec["trainable_params"] < rec["total_params"] / 5


def test_classifier_overfits_32_sst2_examples(tiny_backbone, tmp_path):
    train = _split("sst2", "train").select(range(32))
    rec = run("sst2", "full", tiny_backbone, tmp_path, rows={"train": train, "validation": train},
              max_train_examples=None, max_eval_examples=None, val_examples=32, max_steps=60, batch_size=8,
              lr=3e-3, warmup=0.1, eval_steps=30, early_stopping_patience=100, split="train")
    assert rec["split"] == "train" and rec["n_examples"] == 32
    assert rec["metrics"]["accuracy"] == 100.0


def test_qa_overfits_short_squad_examples(tiny_backbone, tmp_path):
    val = _split("squad", "validation")
    short = sorted(range(len(val)), key=lambda i: len(val[i]["context"]))[:300:50]
    rows = val.select(short)
    rec = run("squad", "full", tiny_backbone, tmp_path, rows={"train": rows, "validation": rows},
              max_train_examples=None, max_eval_examples=None, val_examples=6, max_steps=40, batch_size=6,
              max_length=192, doc_stride=48, lr=5e-3, warmup=0.1, eval_steps=40, early_stopping_patience=100,
              split="validation")
    assert rec["n_examples"] == 6
    assert rec["metrics"]["f1"] > 80.0


def _cfg_obj(**kw):
    from tasks.finetune import FinetuneConfig

    return FinetuneConfig(**kw)


def test_classification_pooling_ignores_padding_side(tiny_backbone):
    from gpt2core.checkpoint import load_model
    from gpt2core.tokenizer import load_tokenizer

    model = adapters.build_model(get_task("trec"), load_model(tiny_backbone), "full", _cfg_obj()).eval()
    texts = ["What is the capital of France ?", "Who wrote Hamlet ?"]
    with torch.no_grad():
        logits = {side: model(**load_tokenizer(tiny_backbone, padding_side=side)(texts, return_tensors="pt",
                                                                              padding=True)).logits
                  for side in ("left", "right")}
        alone = model(**load_tokenizer(tiny_backbone)(texts[1:], return_tensors="pt")).logits
    assert torch.allclose(logits["left"], logits["right"], atol=1e-5)
    assert torch.allclose(logits["right"][1:], alone, atol=1e-5)


def test_qa_windows_label_the_answer_or_the_no_answer_position(tiny_backbone):
    from gpt2core.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_backbone)
    task = get_task("squad")
    rows = _split("squad", "validation").select(range(3))
    feats = features.qa_train_features(rows, tok, task, max_length=96, doc_stride=24)
    assert len(feats) > len(rows)  # long contexts become several overlapping windows
    spans = [(f["start_positions"], f["end_positions"], f["input_ids"]) for f in feats]
    found = [tok.decode(ids[s:e + 1]).strip() for s, e, ids in spans if s != features.NO_ANSWER_POSITION]
    assert {"Denver Broncos", "Carolina Panthers"} <= set(found)
    assert any(s == e == features.NO_ANSWER_POSITION for s, e, _ in spans)
    assert all(len(ids) <= 96 for _, _, ids in spans)


def test_qa_postprocessing_maps_spans_back_to_characters(tiny_backbone):
    import numpy as np

    from gpt2core.tokenizer import load_tokenizer
    from tasks.predict import postprocess_qa

    tok = load_tokenizer(tiny_backbone)
    rows = _split("squad", "validation").select(range(2))
    feats = features.qa_eval_features(rows, tok, get_task("squad"), max_length=96, doc_stride=24)
    gold = features.locate_answer(rows[0]["context"], rows[0]["answers"])
    starts, ends = [], []
    for f in feats:
        offs = f["offset_mapping"]
        s, e = np.zeros(len(offs)), np.zeros(len(offs))
        if f["example_id"] == rows[0]["id"]:
            for t, o in enumerate(offs):
                if o is not None and o[0] <= gold[0] < o[1]:
                    s[t] = 10
                if o is not None and o[0] < gold[1] <= o[1]:
                    e[t] = 10
        starts.append(s)
        ends.append(e)
    answers = postprocess_qa(rows, feats, starts, ends)
    assert answers[rows[0]["id"]] == "Denver Broncos"
    assert answers[rows[1]["id"]] in rows[1]["context"]  # only context spans are candidates


def test_qa_answers_not_in_context_are_skipped_or_an_error(tiny_backbone, caplog):
    from gpt2core.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_backbone)
    task = get_task("squad")
    rows = _split("squad", "validation").select(range(2)).to_list()
    rows[1]["answers"] = {"text": ["no such phrase here"], "answer_start": [5]}
    from datasets import Dataset

    feats = features.qa_train_features(Dataset.from_list(rows), tok, task, max_length=160, doc_stride=40)
    assert "skipped 1 of 2" in caplog.text and len(feats) >= 1
    rows[0]["answers"] = {"text": ["nor this one"], "answer_start": [0]}
    with pytest.raises(features.FeatureError, match="no training example has its answer"):
        features.qa_train_features(Dataset.from_list(rows), tok, task, max_length=160, doc_stride=40)
    # An off answer_start is repaired to the nearest occurrence of the text.
    assert features.locate_answer("a cat and a cat", {"text": ["cat"], "answer_start": [11]}) == (12, 15)


def test_generation_features_mask_the_source_and_fit(tiny_backbone):
    from gpt2core.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_backbone)
    task = get_task("bbc-news")
    rows = _split("bbc-news", "train").select(range(2))
    feats = features.generation_train_features(rows, tok, task, max_length=100, max_target_tokens=20)
    for f, row in zip(feats, rows):
        assert len(f["input_ids"]) <= 100
        n_prompt = sum(1 for x in f["labels"] if x == -100)
        assert f["labels"][n_prompt:] == f["input_ids"][n_prompt:] and f["labels"][-1] == tok.eos_token_id
        prompt = tok.decode(f["input_ids"][:n_prompt])
        assert prompt.endswith(task.separator) and row["source"].startswith(prompt[: -len(task.separator)])
    end = features.prompt_ids(tok, task, rows[0]["source"], 30, keep="end")
    assert tok.decode(end).endswith(task.separator) and len(end) <= 30
    assert rows[0]["source"].endswith(tok.decode(end)[: -len(task.separator)].lstrip()[-20:])


def test_generation_greedy_and_beam_search_stop_cleanly(tiny_backbone):
    from gpt2core.checkpoint import load_model
    from gpt2core.tokenizer import load_tokenizer
    from tasks.predict import PredictSettings, clean_generation, predict

    tok, model = load_tokenizer(tiny_backbone), load_model(tiny_backbone)
    task = get_task("multi30k-en-de")
    rows = _split(task.name, "test").select(range(3))
    greedy = predict(task, model, tok, rows, PredictSettings(max_length=64, max_new_tokens=6))
    beams = predict(task, model, tok, rows, PredictSettings(max_length=64, max_new_tokens=6, num_beams=3))
    assert len(greedy) == len(beams) == 3 and all("\n" not in p for p in greedy + beams)
    # Batch size does not change greedy output (left padding, positions from the mask).
    assert predict(task, model, tok, rows, PredictSettings(max_length=64, max_new_tokens=6, batch_size=1)) == greedy
    assert clean_generation(" Ein Hund läuft.\nEnglish: more") == "Ein Hund läuft."


# ---- bad input -------------------------------------------------------------------------------------------


def test_unknown_task_and_method_list_the_valid_ones(tiny_backbone, tmp_path):
    with pytest.raises(TaskError, match="Known tasks: sst2"):
        get_task("sst3")
    with pytest.raises(adapters.MethodError, match="Known methods: full, linear, lora, prompt, prefix"):
        adapters.check_method(get_task("sst2"), "lorra")
    with pytest.raises(adapters.MethodError, match="applies to classification and QA"):
        finetune("scitldr", "linear", tiny_backbone, out_dir=tmp_path / "x", runs_dir=tmp_path / "r")
    assert not (tmp_path / "x").exists() and not (tmp_path / "r").exists()
    assert finetune_cli.METHODS == adapters.METHODS


def test_cli_reports_bad_input_in_one_line(tiny_backbone, tmp_path, capsys):
    from tasks.cli import main

    assert main(["finetune", "--task", "trec", "--method", "bogus", "--model", str(tiny_backbone)]) == 2
    assert "unknown method 'bogus'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 1.0e-3\nlearning_rate: 2\n")
    assert main(["finetune", "--task", "trec", "--method", "full", "--model", str(tiny_backbone),
                 "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'learning_rate'" in err and str(bad) in err and "known keys: lr," in err
    assert not (tmp_path / "o").exists()
    assert main(["eval", "--task", "sst2", "--model", str(tiny_backbone)]) == 2
    assert "no classification head" in capsys.readouterr().err


def test_config_errors_name_the_key_and_file(tmp_path):
    wrong_type = tmp_path / "t.yaml"
    wrong_type.write_text("batch_size: many\n")
    with pytest.raises(FinetuneConfigError, match=rf"{wrong_type}.*batch_size.*integer"):
        load_finetune_config("sst2", "full", wrong_type)
    per_method = tmp_path / "m.yaml"
    per_method.write_text("methods:\n  lora:\n    lora_rank: 4\n")
    with pytest.raises(FinetuneConfigError, match=r"methods\.lora.*lora_rank.*lora_r"):
        load_finetune_config("sst2", "lora", per_method)
    unknown_method = tmp_path / "u.yaml"
    unknown_method.write_text("methods:\n  qlora: {}\n")
    with pytest.raises(FinetuneConfigError, match="unknown method 'qlora'"):
        load_finetune_config("sst2", "lora", unknown_method)
    with pytest.raises(FinetuneConfigError, match="overrides.*epoch"):
        load_finetune_config("sst2", "lora", overrides={"epoch": 1})
    with pytest.raises(FileNotFoundError):
        load_finetune_config("sst2", "lora", tmp_path / "missing.yaml")


def test_config_layers(tmp_path):
    cfg = load_finetune_config("squad", "lora")
    assert (cfg.max_length, cfg.lr, cfg.lora_r) == (384, 2e-3, 8)  # squad.yaml over defaults.yaml's lora block
    own = tmp_path / "c.yaml"
    own.write_text("lr: 0.1\nmethods:\n  lora: {lora_r: 2}\n")
    cfg = load_finetune_config("squad", "lora", own, overrides={"epochs": 1})
    assert (cfg.max_length, cfg.lr, cfg.lora_r, cfg.epochs) == (256, 0.1, 2, 1.0)
    for task in TASKS:  # every shipped config loads for every applicable method
        for method in adapters.applicable_methods(TASKS[task]):
            load_finetune_config(task, method)


def test_labels_outside_the_label_set_and_empty_splits(tiny_backbone, tmp_path):
    from datasets import Dataset

    from gpt2core.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_backbone)
    task = get_task("sst2")
    bad = Dataset.from_list([{"id": "1", "text": "good", "label": 1}, {"id": "2", "text": "bad", "label": 7}])
    with pytest.raises(features.FeatureError, match=r"outside 0\.\.1.*'2' \(label 7\)"):
        features.classification_features(bad, tok, task, 32)
    with pytest.raises(features.FeatureError, match="label -1"):
        features.classification_features(_split("sst2", "test").select(range(2)), tok, task, 32)
    empty = bad.select([])
    with pytest.raises(features.FeatureError, match="empty"):
        features.classification_features(empty, tok, task, 32)
    rows = small_rows("sst2")
    rows["train"] = bad
    with pytest.raises(features.FeatureError):
        run("sst2", "lora", tiny_backbone, tmp_path, rows=rows)
    assert not (tmp_path / "run").exists() and not (tmp_path / "records").exists()  # nothing written half-way


@pytest.mark.slow
def test_finetune_under_torchrun_with_two_cpu_processes(tiny_backbone, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "tasks.finetune_cli", "finetune", "--task", "trec", "--method", "lora", "--model", str(tiny_backbone),
           "--max-train-examples", "16", "--max-eval-examples", "4", "--max-steps", "2", "--out", str(tmp_path / "run"),
           "--runs-dir", str(tmp_path / "records"), "--no-progress", "--set", "val_examples=4", "--set", "batch_size=4",
           "--set", "bf16=false"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = sorted((tmp_path / "records").glob("*.json"))
    assert len(records) == 1  # written once, by the main process
    rec = json.loads(records[0].read_text())
    assert rec["config"]["world_size"] == 2 and rec["n_examples"] == 4
    assert (tmp_path / "run" / "model" / "adapter_model.safetensors").exists()
