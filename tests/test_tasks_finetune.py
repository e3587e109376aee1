"""Fine-tuning pipelines on the tiny backbone: every task spec x method end to end, overfitting checks, records whose
metrics match a direct computation, save/reload, and clear errors for bad input (the config's layers and blocks:
test_finetune_config.py). Tasks come from whatever specs exist (`available_tasks()`), never from a list here."""

import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import torch
import yaml

from gpt2core.errors import GPT2SuiteError
from tasks.data.load import load_split
from tasks.data.registry import available_tasks, get_task
from tasks.errors import DataError, MethodError, TaskError
from tasks.evaluation.metrics import compute_metrics
from tasks.evaluation.records import read_predictions
from tasks.kinds import get_kind
from tasks.kinds.classification import Classification
from tasks.kinds.conditional_generation import ConditionalGeneration, clean_generation, prompt_ids
from tasks.kinds.extractive_qa import NO_ANSWER_POSITION, ExtractiveQA, eval_features, locate_answer, postprocess
from tasks.methods import adapters
from tasks.methods.evaluate import evaluate
from tasks.methods.finetune import FinetuneConfig, finetune, load_finetune_config

REPO = Path(__file__).resolve().parents[1]
VALIDATION = "validation"

# A few examples, a couple of steps: the point is that every stage runs, not what it scores.
TINY = dict(max_train_examples=8, max_eval_examples=4, val_examples=4, max_steps=2, batch_size=4, eval_batch_size=8,
            max_length=128, doc_stride=32, max_target_tokens=8, progress=False, bf16=False, threads=1,
            logging_steps=1000)

SPECS = [get_task(name) for name in available_tasks()]
FINETUNABLE = [s for s in SPECS if get_kind(s.kind).finetune_methods]  # language modelling has none
TRAINABLE = [s for s in FINETUNABLE if s.has_split(VALIDATION)]  # early stopping scores `validation`


def first(kind_class: type):
    found = [s for s in TRAINABLE if isinstance(get_kind(s.kind), kind_class)]
    if not found:
        pytest.skip(f"no task spec of kind {kind_class.__name__} with a validation split")
    return found[0]


def _cases() -> list:
    """Every spec x applicable method. Unmarked: every method on the first spec that takes all of them, and one
    method (in turn) on every other spec, so each task and each method runs once; `slow` adds the rest."""
    widest = max((len(get_kind(s.kind).finetune_methods) for s in TRAINABLE), default=0)
    full_spec = next((s for s in TRAINABLE if len(get_kind(s.kind).finetune_methods) == widest), None)
    cases, turn = [], 0
    for spec in TRAINABLE:
        methods = get_kind(spec.kind).finetune_methods
        fast = set(methods) if spec is full_spec else {methods[turn % len(methods)]}
        turn += spec is not full_spec
        cases += [pytest.param(spec.name, m, marks=() if m in fast else pytest.mark.slow, id=f"{spec.name}-{m}")
                  for m in methods]
    return cases


pytestmark = pytest.mark.usefixtures("one_thread", "shared_data")


@lru_cache(maxsize=None)
def _split(task: str, split: str):
    return load_split(task, split)


def small_rows(task: str, n_train: int = 8, n_eval: int = 8) -> dict:
    """A few real rows per split. The first rows of `validation` stand in for the training split (some training
    files take seconds to load); its last rows are the validation rows."""
    spec = get_task(task)
    val = _split(task, VALIDATION)
    return {
        spec.train_split: val.select(range(n_train)),
        VALIDATION: val.select(range(len(val) - n_eval, len(val))),
        spec.eval_split: _split(task, spec.eval_split).select(range(n_eval)),
    }


def recompute(record) -> tuple[dict, list]:
    rows = read_predictions(record.predictions)
    spec = get_task(record.task)
    return compute_metrics(spec.metrics, [r["prediction"] for r in rows], [r["references"] for r in rows],
                           spec.label_names), rows


def run(task, method, backbone, tmp_path, rows=None, split=None, **overrides):
    cfg = load_finetune_config(task, method, overrides={**TINY, **overrides})
    return finetune(task, method, backbone, cfg, out_dir=tmp_path / "run", runs_dir=tmp_path / "records",
                    rows=rows if rows is not None else small_rows(task), split=split)


@pytest.mark.parametrize("task,method", _cases())
def test_pipeline_end_to_end(task, method, tiny_backbone, tmp_path):
    rows_by_split = small_rows(task)
    rec = run(task, method, tiny_backbone, tmp_path, rows=rows_by_split)
    spec = get_task(task)
    assert rec.task == task and rec.method == method and rec.split == spec.eval_split
    assert rec.n_examples == 4 and set(rec.metrics) == set(spec.metrics)
    assert rec.config["max_train_examples"] == 8 and rec.config["max_steps"] == 2
    assert rec.details["training"]["global_steps"] == 2
    assert rec.tokens_seen > 0 and rec.train_seconds > 0 and rec.peak_memory_mb > 0
    assert (rec.trainable_params == rec.total_params) == (method == "full")
    # The record holds only this method's settings block.
    assert {k for k in rec.config if k in ("lora", "prompt", "prefix")} <= {method}
    # The record's metrics are what the library computes from the written predictions.
    direct, rows = recompute(rec)
    assert rec.metrics == pytest.approx(direct)
    assert len(rows) == 4 and all({"id", "prediction", "references", "scores"} <= set(r) for r in rows)
    # The saved model (adapter + head, head alone, or whole model) reloads to the same predictions.
    again = evaluate(task, tmp_path / "run" / "model", runs_dir=tmp_path / "records",
                     overrides={k: TINY[k] for k in ("max_length", "doc_stride", "max_target_tokens", "threads")},
                     limit=4, split=spec.eval_split, rows=rows_by_split[spec.eval_split])
    assert [r["prediction"] for r in recompute(again)[1]] == [r["prediction"] for r in rows]
    assert again.method == method and again.metrics == rec.metrics
    assert not {"lora", "prompt", "prefix"} & set(again.config)  # an adapter's settings are its folder's
    # generation records say how they decoded (the spec's generation: settings), the others carry None
    generates = spec.kind == "conditional_generation"
    for r in (rec, again):
        assert (r.config["decoding"]["num_beams"] == spec.generation.num_beams) if generates else (
            r.config["decoding"] is None)


@pytest.mark.parametrize("method", ["lora", "prompt", "prefix", "linear"])
def test_reloaded_adapter_predicts_the_same(method, tiny_backbone, tmp_path):
    """A trained adapter (or head) saved and loaded on a fresh backbone gives identical logits; a head that was
    not saved would be re-initialised at random and would not."""
    from tasks.evaluation.predict import PredictSettings, predict

    spec = first(Classification)
    rec = run(spec.name, method, tiny_backbone, tmp_path, lr=5e-2, max_steps=3)
    model, tok, info = adapters.load_trained(spec, tmp_path / "run" / "model")
    assert info["method"] == method and info["base_model"] == str(tiny_backbone)
    model2, _, _ = adapters.load_trained(spec, tiny_backbone, adapter=tmp_path / "run" / "model")
    ids = tok(["a fine film", "dull and slow , it never works"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(model(**ids).logits, model2(**ids).logits)
    rows = small_rows(spec.name)[VALIDATION]

    def preds(m):
        return predict(spec, m, tok, rows, PredictSettings(max_length=128,
                                                           reserved_positions=adapters.n_virtual_tokens(m)))

    assert preds(model) == preds(model2)
    assert rec.trainable_params < rec.total_params / 5


def test_classifier_overfits_32_training_examples(tiny_backbone, tmp_path):
    spec = first(Classification)
    train = _split(spec.name, spec.train_split).select(range(32))
    rec = run(spec.name, "full", tiny_backbone, tmp_path, rows={spec.train_split: train, VALIDATION: train},
              max_train_examples=None, max_eval_examples=None, val_examples=32, max_steps=60, batch_size=8,
              lr=3e-3, warmup=0.1, eval_steps=30, early_stopping_patience=100, split=spec.train_split)
    assert rec.split == spec.train_split and rec.n_examples == 32
    assert rec.metrics["accuracy"] == 100.0


def test_qa_overfits_short_examples(tiny_backbone, tmp_path):
    spec = first(ExtractiveQA)
    val = _split(spec.name, VALIDATION)
    short = sorted(range(len(val)), key=lambda i: len(val[i]["context"]))[:300:50]
    rows = val.select(short)
    rec = run(spec.name, "full", tiny_backbone, tmp_path, rows={spec.train_split: rows, VALIDATION: rows},
              max_train_examples=None, max_eval_examples=None, val_examples=6, max_steps=40, batch_size=6,
              max_length=192, doc_stride=48, lr=5e-3, warmup=0.1, eval_steps=40, early_stopping_patience=100,
              split=VALIDATION, val_from_train=False)
    assert rec.n_examples == 6
    assert rec.metrics["f1"] > 80.0


def test_classification_pooling_ignores_padding_side(tiny_backbone):
    from gpt2core.checkpoint import load_model
    from gpt2core.tokenizer import load_tokenizer

    model = adapters.build_model(first(Classification), load_model(tiny_backbone), "full", FinetuneConfig()).eval()
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
    spec = first(ExtractiveQA)
    rows = _split(spec.name, VALIDATION).select(range(3))
    feats = get_kind(spec.kind).train_features(spec, rows, tok, FinetuneConfig(doc_stride=24), max_length=96)
    assert len(feats) > len(rows)  # long contexts become several overlapping windows
    spans = [(f["start_positions"], f["end_positions"], f["input_ids"]) for f in feats]
    found = [tok.decode(ids[s:e + 1]).strip() for s, e, ids in spans if s != NO_ANSWER_POSITION]
    gold = {row["context"][slice(*locate_answer(row["context"], row["answers"]))] for row in rows}
    assert found and all(any(g in f for g in gold) for f in found)  # a labelled span covers its answer
    assert gold & set(found)  # and, where tokens align with it, is exactly the answer
    assert any(s == e == NO_ANSWER_POSITION for s, e, _ in spans)
    assert all(len(ids) <= 96 for _, _, ids in spans)


def test_qa_postprocessing_maps_spans_back_to_characters(tiny_backbone):
    import numpy as np

    from gpt2core.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_backbone)
    spec = first(ExtractiveQA)
    rows = _split(spec.name, VALIDATION).select(range(2))
    feats = eval_features(spec, rows, tok, max_length=96, doc_stride=24)
    gold = locate_answer(rows[0]["context"], rows[0]["answers"])
    starts, ends, expected = [], [], None
    for f in feats:
        offs = f["offset_mapping"]
        s, e = np.zeros(len(offs)), np.zeros(len(offs))
        if f["example_id"] == rows[0]["id"]:
            ts = [t for t, o in enumerate(offs) if o is not None and o[0] <= gold[0] < o[1]]
            te = [t for t, o in enumerate(offs) if o is not None and o[0] < gold[1] <= o[1]]
            if ts and te:
                s[ts[0]], e[te[0]] = 10, 10
                expected = rows[0]["context"][offs[ts[0]][0]:offs[te[0]][1]].strip()
        starts.append(s)
        ends.append(e)
    answers = postprocess(rows, feats, starts, ends)
    assert expected is not None and answers[rows[0]["id"]] == expected
    assert rows[0]["context"][gold[0]:gold[1]] in expected
    assert answers[rows[1]["id"]] in rows[1]["context"]  # only context spans are candidates


def test_qa_answers_not_in_context_are_skipped_or_an_error(tiny_backbone, caplog):
    from datasets import Dataset

    from gpt2core.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_backbone)
    spec = first(ExtractiveQA)
    kind, cfg = get_kind(spec.kind), FinetuneConfig(doc_stride=40)
    rows = _split(spec.name, VALIDATION).select(range(2)).to_list()
    rows[1]["answers"] = {"text": ["no such phrase here"], "answer_start": [5]}
    feats = kind.train_features(spec, Dataset.from_list(rows), tok, cfg, max_length=160)
    assert "skipped 1 of 2" in caplog.text and len(feats) >= 1
    rows[0]["answers"] = {"text": ["nor this one"], "answer_start": [0]}
    with pytest.raises(DataError, match="no training example has its answer"):
        kind.train_features(spec, Dataset.from_list(rows), tok, cfg, max_length=160)
    # An off answer_start is repaired to the nearest occurrence of the text.
    assert locate_answer("a cat and a cat", {"text": ["cat"], "answer_start": [11]}) == (12, 15)


def test_generation_features_mask_the_source_and_fit(tiny_backbone):
    from gpt2core.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_backbone)
    spec = first(ConditionalGeneration)
    rows = _split(spec.name, spec.eval_split).select(range(2))
    feats = get_kind(spec.kind).train_features(spec, rows, tok, FinetuneConfig(max_target_tokens=20), max_length=100)
    for f, row in zip(feats, rows):
        assert len(f["input_ids"]) <= 100
        n_prompt = sum(1 for x in f["labels"] if x == -100)
        assert f["labels"][n_prompt:] == f["input_ids"][n_prompt:] and f["labels"][-1] == tok.eos_token_id
        prompt = tok.decode(f["input_ids"][:n_prompt])
        assert prompt.endswith(spec.separator) and row["source"].startswith(prompt[: -len(spec.separator)])
    end = prompt_ids(tok, spec, rows[0]["source"], 30, keep="end")
    assert tok.decode(end).endswith(spec.separator) and len(end) <= 30
    assert rows[0]["source"].endswith(tok.decode(end)[: -len(spec.separator)].lstrip()[-20:])


def test_generation_greedy_and_beam_search_stop_cleanly(tiny_backbone):
    from gpt2core.checkpoint import load_model
    from gpt2core.tokenizer import load_tokenizer
    from tasks.evaluation.predict import PredictSettings, predict

    tok, model = load_tokenizer(tiny_backbone), load_model(tiny_backbone)
    spec = first(ConditionalGeneration)
    rows = _split(spec.name, spec.eval_split).select(range(3))
    greedy = predict(spec, model, tok, rows, PredictSettings(max_length=64, max_new_tokens=6))
    beams = predict(spec, model, tok, rows, PredictSettings(max_length=64, max_new_tokens=6, num_beams=3))
    assert len(greedy) == len(beams) == 3 and all("\n" not in p for p in greedy + beams)
    # Batch size does not change greedy output (left padding, positions from the mask).
    assert predict(spec, model, tok, rows, PredictSettings(max_length=64, max_new_tokens=6, batch_size=1)) == greedy
    assert clean_generation(" Ein Hund läuft.\nEnglish: more", ["\n"]) == "Ein Hund läuft."


# ---- bad input -------------------------------------------------------------------------------------------


def test_unknown_task_and_method_list_the_valid_ones(tiny_backbone, tmp_path):
    name = sorted(available_tasks())[0]
    with pytest.raises(TaskError, match=rf"unknown task '{name}x'. Did you mean '{name}'"):
        get_task(name + "x")
    spec = FINETUNABLE[0]
    with pytest.raises(MethodError, match="unknown method 'lorra'. Did you mean 'lora'.*full, linear, lora, prompt, "
                                          "prefix"):
        adapters.check_method(spec, "lorra")
    headless = [s for s in FINETUNABLE if "linear" not in get_kind(s.kind).finetune_methods]
    if headless:
        with pytest.raises(MethodError, match="'linear' does not apply"):
            finetune(headless[0], "linear", tiny_backbone, out_dir=tmp_path / "x", runs_dir=tmp_path / "r")
    assert not (tmp_path / "x").exists() and not (tmp_path / "r").exists()
    for s in SPECS:
        assert adapters.applicable_methods(s) == get_kind(s.kind).finetune_methods


def _spec_without_validation(tmp_path: Path) -> str:
    """A copy of a fine-tunable spec with its validation split removed, in a folder of extra specs."""
    spec = FINETUNABLE[0]
    data = yaml.safe_load(Path(spec.source_file).read_text())
    data["splits"] = {k: v for k, v in data["splits"].items() if k != VALIDATION}
    if data.get("eval_split") == VALIDATION:
        data["eval_split"] = spec.train_split
    data["name"] = name = f"{spec.name}-noval"
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return name


def test_finetuning_needs_a_validation_split(tiny_backbone, tmp_path, monkeypatch, capsys):
    from tasks.cli.main import main

    name = _spec_without_validation(tmp_path)
    monkeypatch.setenv("GPT2SUITE_TASK_PATH", str(tmp_path / "specs"))
    spec = get_task(name)
    assert not spec.has_split(VALIDATION)
    with pytest.raises(TaskError, match=rf"task '{name}' has no 'validation' split.*add one to its spec"):
        finetune(spec, "full", tiny_backbone, out_dir=tmp_path / "x", runs_dir=tmp_path / "r")
    assert main(["finetune", "--task", name, "--method", "full", "--model", str(tiny_backbone),
                 "--out", str(tmp_path / "x"), "--runs-dir", str(tmp_path / "r")]) == 2
    assert "no 'validation' split" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "r").exists()


def test_cli_reports_bad_input_in_one_line(tiny_backbone, tmp_path, capsys):
    from tasks.cli.main import main

    spec = first(Classification)
    assert main(["finetune", "--task", spec.name, "--method", "bogus", "--model", str(tiny_backbone)]) == 2
    assert "unknown method 'bogus'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 1.0e-3\nlearning_rate: 2\n")
    assert main(["finetune", "--task", spec.name, "--method", "full", "--model", str(tiny_backbone),
                 "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'learning_rate'" in err and str(bad) in err and "Valid keys: lr," in err
    assert len(err.strip().splitlines()) == 1
    assert main(["finetune", "--task", spec.name, "--method", "full", "--model", str(tiny_backbone),
                 "--set", "lr"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["finetune", "--task", spec.name, "--method", "full", "--model", str(tmp_path / "nothing")]) == 2
    assert str(tmp_path / "nothing") in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["eval", "--task", spec.name, "--model", str(tiny_backbone)]) == 2
    assert f"no {spec.kind} head" in capsys.readouterr().err
    assert main(["eval", "--task", spec.name, "--model", str(tiny_backbone), "--split", "nosuch"]) == 2
    assert "unknown split 'nosuch'" in capsys.readouterr().err


def test_labels_outside_the_label_set_and_empty_splits(tiny_backbone, tmp_path):
    from datasets import Dataset

    from gpt2core.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_backbone)
    spec = first(Classification)
    kind, cfg = get_kind(spec.kind), FinetuneConfig()
    n = len(spec.labels)
    bad = Dataset.from_list([{"id": "1", "text": "good", "label": 1}, {"id": "2", "text": "bad", "label": n + 5}])
    with pytest.raises(DataError, match=rf"outside 0\.\.{n - 1}.*'2' \(label {n + 5}\)"):
        kind.train_features(spec, bad, tok, cfg, 32)
    unlabelled = Dataset.from_list([{"id": "1", "text": "hidden", "label": -1}])  # as GLUE's test splits
    with pytest.raises(DataError, match="label -1"):
        kind.train_features(spec, unlabelled, tok, cfg, 32)
    with pytest.raises(DataError, match="empty"):
        kind.train_features(spec, bad.select([]), tok, cfg, 32)
    rows = small_rows(spec.name)
    rows[spec.train_split] = bad
    with pytest.raises(GPT2SuiteError):
        run(spec.name, "lora", tiny_backbone, tmp_path, rows=rows)
    assert not (tmp_path / "run").exists() and not (tmp_path / "records").exists()  # nothing written half-way


@pytest.mark.slow
def test_finetune_under_torchrun_with_two_cpu_processes(tiny_backbone, tmp_path):
    spec = first(Classification)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "tasks.cli.finetune", "finetune", "--task", spec.name, "--method", "lora", "--model", str(tiny_backbone),
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
