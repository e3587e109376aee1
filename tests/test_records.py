"""Run records (tasks.evaluation.records): complete, atomic, readable back, named from what defines the run; one
writer and one per-example layout."""

import dataclasses
import json
import os
from dataclasses import dataclass

import pytest

from tasks.data.registry import get_task, spec_fields
from tasks.errors import RecordError
from tasks.evaluation import records
from tasks.evaluation.records import (RECORD_FORMAT, RunRecord, config_hash, example_row, new_record, read_predictions,
                                      read_record, record_name, repo_relative, write_predictions, write_run)

SST2 = get_task("sst2")


@dataclass
class Cfg:
    lr: float = 1e-3
    epochs: int = 2


def _model(tmp_path):
    model = tmp_path / "mymodel"
    model.mkdir(exist_ok=True)
    if not (model / "config.json").exists():
        (model / "config.json").write_text(json.dumps({"n_layer": 2, "transformers_version": "5.24.0"}))
    return model


def _record(tmp_path, spec=SST2, method="lora", **kw) -> RunRecord:
    args = dict(split="validation", n_examples=4, metrics={"accuracy": 75.0, "binary_f1": 50.0}, seed=3,
                config=Cfg(), trainable_params=10, total_params=100, train_seconds=1.23456, eval_seconds=0.5,
                peak_memory_mb=records.peak_memory_mb(), tokens_seen=1000)
    model_path = kw.pop("model_path", None) or _model(tmp_path)
    args.update(kw)
    return new_record(spec, method, model_path, **args)


ROWS = [example_row(1, "positive", ["positive"], {"accuracy": 100.0, "correct": 1.0}),
        example_row("2", "negative", ["positive"], {"accuracy": 0.0}, details={"demos_used": 2})]


def test_record_round_trip(tmp_path):
    rec = _record(tmp_path)
    assert rec.task == "sst2" and rec.task_version == SST2.version and rec.shots is None
    assert rec.task_hash == config_hash(spec_fields(SST2))
    assert rec.config == {"lr": 1e-3, "epochs": 2}
    assert rec.model["config_hash"] and len(rec.model["config_hash"]) == 16
    assert rec.peak_memory_mb > 0 and rec.train_seconds == 1.235 and rec.format == RECORD_FORMAT
    path = write_run(rec, ROWS, runs_dir=tmp_path / "runs")
    assert path.parent == tmp_path / "runs" and path.name.startswith("sst2__lora__mymodel__seed3__")
    back = read_record(path)
    assert back == rec and back.to_dict() == json.loads(json.dumps(rec.to_dict()))
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_the_task_hash_covers_the_whole_spec(tmp_path):
    other = dataclasses.replace(SST2, prompt=dataclasses.replace(SST2.prompt, answer=" {label}."))
    assert _record(tmp_path, spec=other).task_hash != _record(tmp_path).task_hash
    assert record_name(_record(tmp_path, spec=other)) != record_name(_record(tmp_path))
    moved = dataclasses.replace(SST2, source_file="/elsewhere/sst2.yaml")  # where it was read from does not count
    assert _record(tmp_path, spec=moved).task_hash == _record(tmp_path).task_hash


def test_model_hash_ignores_volatile_keys(tmp_path):
    a = _record(tmp_path).model["config_hash"]
    (tmp_path / "mymodel" / "config.json").write_text(json.dumps({"n_layer": 2, "transformers_version": "9"}))
    assert _record(tmp_path).model["config_hash"] == a
    (tmp_path / "mymodel" / "config.json").write_text(json.dumps({"n_layer": 3}))
    assert _record(tmp_path).model["config_hash"] != a
    assert _record(tmp_path, model_path="dummy").model == {"path": "dummy", "config_hash": None}


def test_name_depends_on_setup_not_time(tmp_path):
    a, b = _record(tmp_path), _record(tmp_path, train_seconds=99.0, details={"log": [1, 2]})
    assert record_name(a) == record_name(b)
    assert record_name(a) != record_name(_record(tmp_path, config=Cfg(lr=2e-3)))
    assert "-5shot" in record_name(_record(tmp_path, method="prompt", shots=5))


def test_config_hash_is_canonical():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": (1, 2), "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert len(config_hash(Cfg())) == 16 and config_hash(Cfg()) == config_hash({"lr": 1e-3, "epochs": 2})


def test_example_rows_have_one_layout_and_round_trip(tmp_path):
    assert ROWS[0] == {"id": "1", "prediction": "positive", "references": ["positive"],
                       "scores": {"accuracy": 100.0, "correct": 1.0}}  # no details key when there are none
    assert ROWS[1]["details"] == {"demos_used": 2}
    rows = ROWS + [example_row("3", "x", ["a", "b"], {"f1": float("nan")})]
    path = write_predictions(rows, tmp_path / "p" / "preds.jsonl")
    back = read_predictions(path)
    assert back[:2] == ROWS and back[2]["scores"]["f1"] is None  # NaN is not JSON


def test_bad_inputs(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RecordError, match="not valid JSON"):
        read_record(bad)
    with pytest.raises(RecordError, match="does not exist"):
        read_record(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(RecordError, match="not a JSON object"):
        read_record(tmp_path / "list.json")
    (tmp_path / "old.json").write_text(json.dumps({"task": "sst2", "format": 1}))
    with pytest.raises(RecordError, match="older gpt2suite"):
        read_record(tmp_path / "old.json")
    (tmp_path / "partial.json").write_text(json.dumps({"task": "sst2", "format": RECORD_FORMAT}))
    with pytest.raises(RecordError, match="lacks"):
        read_record(tmp_path / "partial.json")
    with pytest.raises(RecordError, match="at least one score"):
        _record(tmp_path, metrics={})
    with pytest.raises(RecordError, match="row 0"):
        write_predictions(["nope"], tmp_path / "x.jsonl")
    with pytest.raises(RecordError, match="row 1 is not an example_row"):
        write_run(_record(tmp_path), [ROWS[0], {"id": "2", "prediction": "x"}], runs_dir=tmp_path / "r")
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "r").exists()  # nothing half-written
    with pytest.raises(RecordError, match="does not exist"):
        read_predictions(tmp_path / "missing.jsonl")


def test_paths_inside_the_repository_are_repo_relative(tmp_path):
    inside = records.REPO_ROOT / "results" / "runs" / "p.jsonl"
    assert repo_relative(inside) == "results/runs/p.jsonl"
    assert os.path.isabs(repo_relative(tmp_path / "p.jsonl"))


def test_write_run_puts_predictions_beside_the_record(tmp_path):
    rec = _record(tmp_path)
    path = write_run(rec, ROWS, runs_dir=tmp_path / "runs")
    back = read_record(path)
    assert back.predictions.endswith(path.name[:-5] + ".predictions.jsonl")
    assert read_predictions(back.predictions) == ROWS
    no_rows = write_run(_record(tmp_path, method="perplexity"), None, runs_dir=tmp_path / "runs")
    assert read_record(no_rows).predictions is None
    named = write_run(_record(tmp_path), ROWS, runs_dir=tmp_path / "runs", name="cell-1.json")
    assert named.name == "cell-1.json" and (tmp_path / "runs" / "cell-1.predictions.jsonl").is_file()
