"""Run records: complete, atomic, readable back, named from what defines the run."""

import json
import os
from dataclasses import dataclass

import pytest

from tasks import records
from tasks.records import (
    RECORD_KEYS,
    RecordError,
    config_hash,
    make_record,
    read_predictions,
    read_record,
    record_name,
    write_predictions,
    write_record,
)


@dataclass
class Cfg:
    lr: float = 1e-3
    epochs: int = 2


def _record(tmp_path, **kw):
    model = tmp_path / "mymodel"
    model.mkdir(exist_ok=True)
    if not (model / "config.json").exists():
        (model / "config.json").write_text(json.dumps({"n_layer": 2, "transformers_version": "5.24.0"}))
    args = dict(task="sst2", method="lora", model_path=model, split="validation", n_examples=4,
                metrics={"accuracy": 0.75, "f1": 0.5}, predictions=tmp_path / "preds.jsonl", seed=3, config=Cfg(),
                trainable_params=10, total_params=100, train_seconds=1.23456, eval_seconds=0.5,
                peak_memory_mb=records.peak_memory_mb(), tokens_seen=1000)
    args.update(kw)
    return make_record(**args)


def test_record_round_trip(tmp_path):
    rec = _record(tmp_path)
    assert set(RECORD_KEYS) <= set(rec)
    assert rec["task_version"] == "1" and rec["shots"] is None
    assert rec["config"] == {"lr": 1e-3, "epochs": 2}
    assert rec["model"]["config_hash"] and len(rec["model"]["config_hash"]) == 16
    assert rec["peak_memory_mb"] > 0
    path = write_record(rec, runs_dir=tmp_path / "runs")
    assert path.parent == tmp_path / "runs" and path.name.startswith("sst2__lora__mymodel__seed3__")
    assert read_record(path) == json.loads(json.dumps(rec))
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_model_hash_ignores_volatile_keys(tmp_path):
    a = _record(tmp_path)["model"]["config_hash"]
    (tmp_path / "mymodel" / "config.json").write_text(json.dumps({"n_layer": 2, "transformers_version": "9"}))
    assert _record(tmp_path)["model"]["config_hash"] == a
    (tmp_path / "mymodel" / "config.json").write_text(json.dumps({"n_layer": 3}))
    assert _record(tmp_path)["model"]["config_hash"] != a


def test_name_depends_on_setup_not_time(tmp_path):
    a, b = _record(tmp_path), _record(tmp_path, train_seconds=99.0)
    assert record_name(a) == record_name(b)
    assert record_name(a) != record_name(_record(tmp_path, config=Cfg(lr=2e-3)))
    assert "-5shot" in record_name(_record(tmp_path, method="prompt", shots=5))


def test_config_hash_is_canonical():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": (1, 2), "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_predictions_round_trip(tmp_path):
    rows = [{"id": "1", "prediction": "positive", "references": ["positive"], "accuracy": 1.0},
            {"id": "2", "prediction": "x", "references": ["a", "b"], "f1": float("nan")}]
    path = write_predictions(rows, tmp_path / "p" / "preds.jsonl")
    back = read_predictions(path)
    assert back[0] == rows[0] and back[1]["f1"] is None  # NaN is not JSON


def test_bad_inputs(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RecordError, match="not valid JSON"):
        read_record(bad)
    with pytest.raises(RecordError, match="does not exist"):
        read_record(tmp_path / "missing.json")
    (tmp_path / "partial.json").write_text(json.dumps({"task": "sst2"}))
    with pytest.raises(RecordError, match="lacks"):
        read_record(tmp_path / "partial.json")
    with pytest.raises(RecordError, match="lacks"):
        write_record({"task": "sst2"}, tmp_path / "x.json")
    with pytest.raises(RecordError, match="no metrics"):
        _record(tmp_path, metrics={})
    with pytest.raises(RecordError, match="clashes"):
        _record(tmp_path, extra={"task": "x"})
    with pytest.raises(RecordError, match="row 0"):
        write_predictions(["nope"], tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "x.json").exists()


def test_predictions_path_is_repo_relative(tmp_path):
    inside = records.REPO_ROOT / "results" / "runs" / "p.jsonl"
    rec = _record(tmp_path, predictions=inside)
    assert rec["predictions"] == "results/runs/p.jsonl"
    assert os.path.isabs(_record(tmp_path)["predictions"])


def test_write_run_puts_predictions_beside_the_record(tmp_path):
    rec = _record(tmp_path, predictions=None)
    rows = [{"id": "1", "prediction": "positive", "references": ["positive"], "accuracy": 100.0}]
    path = records.write_run(rec, rows, runs_dir=tmp_path / "runs")
    back = read_record(path)
    assert back["predictions"].endswith(path.name[:-5] + ".predictions.jsonl")
    assert read_predictions(back["predictions"]) == rows
