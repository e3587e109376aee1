"""The leaderboard: a small config end to end (DummyLM + a tiny backbone), the record cache (reuse, a corrupt
record, an old-format record, an interrupted run), cell keys (the whole spec, only the cell's fine-tuning method's
fields), bootstrap intervals and paired tests, clear errors, and the HTML page in Chromium."""

import csv
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from tasks.data.registry import TASK_PATH_VAR, get_task
from tasks.errors import GPT2SuiteError
from tasks.evaluation import bootstrap
from tasks.evaluation.metrics import compute_metrics, example_scores
from tasks.evaluation.records import RECORD_FORMAT
from tasks.leaderboard import LeaderboardError, config_from_dict, load_config, plan, run_leaderboard
from tasks.leaderboard import run as lb_run
from tasks.leaderboard import runners
from tasks.leaderboard.keys import CELL_FORMAT, cell_key
from tasks.leaderboard.methods import parse_method
from tasks.leaderboard.render.plots import method_colour, pareto_front
from tasks.leaderboard.render.rows import COLUMNS
from tasks.leaderboard.store import RecordStore

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "configs" / "leaderboard" / "test.yaml"
# test.yaml: trec (tfidf-lr, majority, zero-shot, few-shot:2, few-shot-calibrated:2), multi30k-en-de (copy,
# zero-shot, few-shot:2), wikitext2 (perplexity): 9 cells; 6 method/task pairs that do not apply.
N_CELLS, N_SKIPPED = 9, 6
# trec: accuracy + macro_f1, and accuracy_norm (per-byte rule) for its 3 prompted cells; multi30k: bleu + chrf;
# wikitext2: 3 metrics
N_CSV_ROWS = 5 * 2 + 3 + 3 * 2 + 3
N_PRIMARY_ROWS = 5 + 3 + 1


pytestmark = pytest.mark.usefixtures("one_thread")


class Counter:
    """Wraps `run.execute_cell`: counts the cells that really run; can fail or interrupt one of them."""

    def __init__(self, monkeypatch, fail_at: int | None = None, exc: BaseException | None = None):
        self.calls: list[str] = []
        self.fail_at, self.exc = fail_at, exc
        real = runners.execute_cell

        def wrapped(ctx, cell, key):
            self.calls.append(cell.label)
            if self.fail_at is not None and len(self.calls) == self.fail_at:
                raise self.exc
            return real(ctx, cell, key)

        monkeypatch.setattr(lb_run, "execute_cell", wrapped)


def run(out, config=TEST_CONFIG, **kw):
    logs: list[str] = []
    result = run_leaderboard(config, out=out, log=logs.append, **kw)
    return result, logs


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def record_files(out):
    return {p.name: p.stat().st_mtime_ns for p in (Path(out) / "runs").glob("*.json") if p.name != "index.json"}


# ---- end to end --------------------------------------------------------------------------------------------


def test_small_config_end_to_end_then_everything_is_reused(tmp_path, shared_data, monkeypatch):
    out = tmp_path / "lb"
    first = Counter(monkeypatch)
    result, logs = run(out)
    assert len(first.calls) == N_CELLS and result.count("ran") == N_CELLS and not result.failed
    assert len(result.notes) == N_SKIPPED
    assert any("baseline:copy-source" in n.cell and "does not apply to trec" in n.message for n in result.notes)
    assert any("cannot be fine-tuned" in n.message for n in result.notes)
    for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.html", "leaderboard_scores.png",
                 "leaderboard_pareto.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "leaderboard_scores.png").read_bytes()[:4] == b"\x89PNG"

    with open(out / "leaderboard.csv", newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header) == COLUMNS and header.index("below_best") == header.index("record") + 1
    rows = read_csv(out / "leaderboard.csv")
    assert len(rows) == N_CSV_ROWS
    methods = {(r["task"], r["method"], r["shots"]) for r in rows}
    assert ("trec", "few-shot-calibrated", "2") in methods and ("multi30k-en-de", "baseline:copy-source", "") in methods
    assert ("trec", "zero-shot", "0") in methods and ("wikitext2", "language-modelling", "0") in methods
    for r in rows:
        assert (REPO / r["record"]).exists() or Path(r["record"]).exists()
        if r["ci_low"]:  # the interval holds the point estimate
            assert float(r["ci_low"]) <= float(r["value"]) + 1e-9 <= float(r["ci_high"]) + 2e-9, r
    # values equal what the records say
    for r in rows:
        rec = json.loads(Path(r["record"]).read_text())
        assert float(r["value"]) == pytest.approx(rec["metrics"][r["metric"]], abs=1e-4)
    # best first within each task; each task's best row is not marked
    trec = [r for r in rows if r["task"] == "trec" and r["metric"] == "accuracy"]
    assert [float(r["value"]) for r in trec] == sorted((float(r["value"]) for r in trec), reverse=True)
    assert trec[0]["below_best"] == "false" and trec[0]["p_value"] == ""
    wt = [r for r in rows if r["task"] == "wikitext2"]
    assert [r["metric"] for r in wt] == get_task("wikitext2").metrics and not wt[0]["ci_low"]
    assert wt[0]["metric"] == get_task("wikitext2").primary_metric and int(wt[0]["n"]) > 0  # tokens scored

    md = (out / "leaderboard.md").read_text()
    summary, every = md.split("## Every row (primary metric)")
    table = [line for line in every.splitlines() if line.startswith("| ") and not line.startswith("| task")]
    # primary metrics only, named by the metric registry's labels
    assert len(table) == N_PRIMARY_ROWS and all("macro-F1" not in line and "chrF" not in line for line in table)
    assert sum("| BLEU |" in line for line in table) == 3 and sum("| bits per byte |" in line for line in table) == 1
    assert "## Skipped" in md and "Command: `" in md
    assert "wikitext2: bits per byte (lower is better)" in md
    # the per-task summary: trec's margin is its best prompted row minus its best baseline
    best = {}
    for r in trec:
        kind = "baseline" if r["method"].startswith("baseline:") else "backbone"
        best.setdefault(kind, float(r["value"]))
    trec_line = next(line for line in summary.splitlines() if line.startswith("| trec |"))
    assert trec_line.endswith(f"| {best['backbone'] - best['baseline']:+.2f} |")

    # Second run: every cell comes from the cache, no record is rewritten, the tables are the same.
    mtimes = record_files(out)
    second = Counter(monkeypatch)
    result2, logs2 = run(out)
    assert second.calls == [] and result2.count("cached") == N_CELLS
    assert record_files(out) == mtimes
    assert read_csv(out / "leaderboard.csv") == rows


def test_corrupt_record_is_reported_and_rerun_and_a_lost_index_is_rebuilt(tmp_path, shared_data, monkeypatch):
    out = tmp_path / "lb"
    run(out)
    names = sorted(record_files(out))
    victim = next(n for n in names if n.startswith("trec__few-shot-2shot"))
    others = {n: t for n, t in record_files(out).items() if n != victim}
    (out / "runs" / victim).write_text('{"format": 1, "task": "tr')  # half a file, as a crashed other tool might leave
    counter = Counter(monkeypatch)
    result, logs = run(out)
    assert counter.calls == ["trec | few-shot:2 | dummy | seed 0"]
    assert any(victim in line and "cannot be used" in line and "not valid JSON" in line for line in logs)
    rewritten = json.loads((out / "runs" / victim).read_text())
    assert rewritten["leaderboard"]["cell_key"] and rewritten["format"] == RECORD_FORMAT
    assert all(isinstance(json.loads(line)["scores"], dict)  # per-example rows: nested scores
               for line in Path(rewritten["predictions"]).read_text().splitlines())
    assert {n: t for n, t in record_files(out).items() if n != victim} == others  # nothing else touched

    (out / "runs" / "index.json").write_text("garbage")
    counter = Counter(monkeypatch)
    result, logs = run(out)
    assert counter.calls == [] and result.count("cached") == N_CELLS
    assert any("rebuilding" in line for line in logs)
    assert len(json.loads((out / "runs" / "index.json").read_text())["cells"]) == N_CELLS


def test_interrupted_run_keeps_finished_records_and_the_next_run_does_the_rest(tmp_path, shared_data, monkeypatch):
    out = tmp_path / "lb"
    Counter(monkeypatch, fail_at=4, exc=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run(out)
    assert len(record_files(out)) == 3
    assert len(json.loads((out / "runs" / "index.json").read_text())["cells"]) == 3
    assert not list((out / "runs").glob(".*.tmp"))  # no half-written file
    partial, _ = run(out, render_only=True)  # tables from what is there, nothing run
    assert partial.count("cached") == 3 and partial.count("missing") == N_CELLS - 3
    assert "## Not run yet" in (out / "leaderboard.md").read_text()
    counter = Counter(monkeypatch)
    result, _ = run(out)
    assert len(counter.calls) == N_CELLS - 3 and result.count("cached") == 3 and not result.failed


def test_a_failing_cell_is_reported_and_the_others_still_run(tmp_path, shared_data, monkeypatch):
    from tasks.cli.main import main

    out = tmp_path / "lb"
    Counter(monkeypatch, fail_at=2, exc=RuntimeError("boom"))
    assert main(["leaderboard", "--config", str(TEST_CONFIG), "--out", str(out)]) == 1
    assert len(record_files(out)) == N_CELLS - 1
    md = (out / "leaderboard.md").read_text()
    assert "## Failed" in md and "RuntimeError: boom" in md
    counter = Counter(monkeypatch)
    result, _ = run(out)
    assert len(counter.calls) == 1 and not result.failed


def test_prompt_too_long_for_the_model_is_surfaced(tmp_path, shared_data, monkeypatch):
    from tasks.models.lm import DummyLM

    monkeypatch.setattr(runners.Context, "lm", lambda self, model, batch_size: (DummyLM(max_length=6), None))
    cfg = config_from_dict({"models": {"dummy": "dummy"}, "tasks": ["trec"], "methods": ["zero-shot"],
                            "budgets": {"max_eval_examples": 3}}, "inline.yaml")
    result, logs = run(tmp_path / "lb", cfg)
    [failed] = result.failed
    assert "exceeds the model's n_positions=6" in failed.message
    assert "n_positions=6" in (tmp_path / "lb" / "leaderboard.md").read_text()


def test_finetune_and_trained_adapter_cells_on_a_tiny_backbone(tmp_path, tiny_backbone, monkeypatch):
    data = {
        "models": {"tiny": str(tiny_backbone)},
        "tasks": ["trec"],
        "methods": ["finetune:lora", "finetune:linear", "baseline:majority"],
        "seeds": [3],
        "budgets": {"max_eval_examples": 6, "max_train_examples": 8, "max_steps": 1, "batch_size": 4,
                    "val_examples": 4, "max_length": 64, "threads": 1,
                    "finetune": {"eval_batch_size": 8, "logging_steps": 1000, "bf16": False}},
        "task_budgets": {"trec": {"finetune": {"lr": 1.0e-3}}},
    }
    out, models = tmp_path / "lb", tmp_path / "models"
    result, _ = run(out, config_from_dict(data, "tiny.yaml"), models_dir=models)
    assert result.count("ran") == 3 and not result.failed
    rows = {r["method"]: r for r in read_csv(out / "leaderboard.csv") if r["metric"] == "accuracy"}
    assert int(rows["finetune:lora"]["trainable_params"]) > int(rows["finetune:linear"]["trainable_params"]) > 0
    rec = json.loads(Path(rows["finetune:lora"]["record"]).read_text())
    assert rec["config"]["seed"] == 3 and rec["config"]["lr"] == 1.0e-3 and rec["config"]["max_steps"] == 1
    assert rec["n_examples"] == 6
    # A budget that changes the result makes a new cell; one that does not (threads) does not.
    cfg2 = config_from_dict({**data, "budgets": {**data["budgets"], "threads": 2}}, "tiny.yaml")
    assert [cell_key(cfg2, c)[0] for c in plan(cfg2)[0]] == [s.key for s in result.cells]
    cfg3 = config_from_dict({**data, "budgets": {**data["budgets"], "max_steps": 2}}, "tiny.yaml")
    keys3 = [cell_key(cfg3, c)[0] for c in plan(cfg3)[0]]
    assert sum(k != s.key for k, s in zip(keys3, result.cells)) == 2  # both fine-tuning cells, not the baseline

    # The trained LoRA adapter as a model entry: evaluated (not retrained) in the finetune:lora row.
    [adapter] = list(models.glob("trec/lora-*/model"))
    data2 = {**data, "models": {"tiny+adapter": {"path": str(tiny_backbone), "adapters": {"trec": str(adapter)}}},
             "methods": ["finetune:lora"]}
    counter = Counter(monkeypatch)
    result2, _ = run(tmp_path / "lb2", config_from_dict(data2, "adapter.yaml"), models_dir=models)
    [cell] = result2.cells
    assert cell.cell.kind == "adapter" and cell.status == "ran" and len(counter.calls) == 1
    assert cell.record.metrics["accuracy"] == pytest.approx(float(rows["finetune:lora"]["value"]), abs=1e-4)
    assert cell.record.leaderboard["cell_key"] == cell.key


# ---- cell keys ---------------------------------------------------------------------------------------------


def _model_folder(tmp_path):
    """A model folder as far as keys see one (its config and weight files are hashed); nothing is loaded."""
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"n_layer": 2, "n_embd": 32}))
    (folder / "model.safetensors").write_bytes(b"not really weights")
    return folder


def _keys(data):
    cfg = config_from_dict(data, "keys.yaml")
    return {(c.task, c.method.name): cell_key(cfg, c)[0] for c in plan(cfg)[0]}


def test_a_lora_setting_rekeys_lora_cells_only_and_a_prefix_setting_prefix_cells_only(tmp_path):
    data = {"models": {"m": str(_model_folder(tmp_path))}, "tasks": ["trec", "wikitext2"],
            "methods": ["finetune:lora", "finetune:prefix", "zero-shot", "baseline:majority"],
            "budgets": {"max_eval_examples": 10, "max_steps": 2}}
    base = _keys(data)
    assert len(base) == 5 and len(set(base.values())) == 5
    lora = _keys({**data, "budgets": {**data["budgets"], "finetune": {"r": 4, "alpha": 8}}})
    prefix = _keys({**data, "budgets": {**data["budgets"], "finetune": {"num_virtual_tokens": 7}}})
    common = _keys({**data, "budgets": {**data["budgets"], "finetune": {"lr": 1.0e-3}}})
    changed = {name: {k for k in base if keys[k] != base[k]} for name, keys in
               (("lora", lora), ("prefix", prefix), ("common", common))}
    assert changed["lora"] == {("trec", "finetune:lora")}
    assert changed["prefix"] == {("trec", "finetune:prefix")}
    assert changed["common"] == {("trec", "finetune:lora"), ("trec", "finetune:prefix")}
    cfg = config_from_dict(data, "keys.yaml")
    whats = {c.method.name: cell_key(cfg, c)[1] for c in plan(cfg)[0]}
    assert whats["finetune:lora"]["format"] == CELL_FORMAT
    assert "lora" in whats["finetune:lora"]["finetune"] and "prefix" not in whats["finetune:lora"]["finetune"]
    assert "prefix" in whats["finetune:prefix"]["finetune"] and "lora" not in whats["finetune:prefix"]["finetune"]
    assert whats["zero-shot"]["task"]["prompt"] == {"instruction": "", "input": "Question: {text}\nType:",
                                                   "answer": " {label}"}  # the whole spec is hashed


def test_editing_a_spec_rekeys_that_tasks_cells_and_no_others(tmp_path, monkeypatch):
    data = {"models": {"d": "dummy"}, "tasks": ["trec", "sst2", "wikitext2"],
            "methods": ["zero-shot", "few-shot:2", "baseline:majority"], "budgets": {"max_eval_examples": 10}}
    base = _keys(data)
    extra = tmp_path / "specs"
    extra.mkdir()
    for field, value in (("prompt", {"input": "Q: {text}\nA:", "answer": " {label}"}),
                         ("baselines", {"majority": {}, "tfidf-lr": {"C": 1.0}})):
        spec = yaml.safe_load(Path(get_task("trec").source_file).read_text())
        spec[field] = value
        (extra / "trec.yaml").write_text(yaml.safe_dump(spec))  # a later spec folder's file of a name wins
        monkeypatch.setenv(TASK_PATH_VAR, str(extra))
        edited = _keys(data)
        assert {k for k in base if edited[k] != base[k]} == {k for k in base if k[0] == "trec"}, field
    monkeypatch.delenv(TASK_PATH_VAR)
    assert _keys(data) == base


def test_a_baseline_applies_where_the_spec_lists_it(tmp_path, monkeypatch):
    data = {"models": {"d": "dummy"}, "tasks": ["trec"], "methods": ["baseline:majority", "baseline:tfidf-lr"]}
    cells, notes = plan(config_from_dict(data, "b.yaml"))
    assert [c.method.baseline for c in cells] == ["majority", "tfidf-lr"] and not notes
    spec = yaml.safe_load(Path(get_task("trec").source_file).read_text())
    spec["baselines"] = {"tfidf-lr": {"C": 1.0}}
    (tmp_path / "trec.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv(TASK_PATH_VAR, str(tmp_path))
    cells, notes = plan(config_from_dict(data, "b.yaml"))
    assert [c.method.baseline for c in cells] == ["tfidf-lr"]
    [note] = notes
    assert note.cell == "trec | baseline:majority" and "its spec lists: tfidf-lr" in note.message


def test_old_format_records_are_reported_never_reused_and_never_crash_a_scan(tmp_path, shared_data, monkeypatch):
    out = tmp_path / "lb"
    runs = out / "runs"
    runs.mkdir(parents=True)
    old = {"format": 1, "task": "trec", "method": "zero-shot", "metrics": {"accuracy": 10.0}, "n_examples": 12,
           "predictions": None, "leaderboard": {"cell_key": "0123456789abcdef", "cell": {"task": "trec"}}}
    (runs / "trec__zero-shot__dummy__seed0__00000000__lb0123456789.json").write_text(json.dumps(old))
    (runs / "odd.json").write_text(json.dumps({"leaderboard": ["not", "a", "mapping"]}))
    (runs / "list.json").write_text("[1, 2]")
    logs: list[str] = []
    store = RecordStore(runs, logs.append)
    store.scan()
    assert store.index == {} and any("older format (1 of format 1" in line for line in logs)
    store.index["0123456789abcdef"] = {"record": "trec__zero-shot__dummy__seed0__00000000__lb0123456789.json"}
    cached, problem = store.lookup("0123456789abcdef")
    assert cached is None and "format 1" in problem and "re-run it" in problem
    counter = Counter(monkeypatch)
    result, logs = run(out)  # a whole run over that folder: every cell runs, the old record stays untouched
    assert len(counter.calls) == N_CELLS and not result.failed
    assert json.loads((runs / "trec__zero-shot__dummy__seed0__00000000__lb0123456789.json").read_text()) == old


# ---- statistics --------------------------------------------------------------------------------------------


def _run_of(task, preds, refs):
    rows = [{"id": str(i), "prediction": p, "references": r, "scores": example_scores(task.metrics, p, r)}
            for i, (p, r) in enumerate(zip(preds, refs))]
    return bootstrap.Run.from_rows(rows)


def test_paired_bootstrap_marks_a_clearly_worse_row_and_not_an_equal_one():
    task = get_task("sst2")
    rng = random.Random(0)
    gold = [rng.choice(task.label_names) for _ in range(80)]
    refs = [[g] for g in gold]
    flip = {"positive": "negative", "negative": "positive"}
    good = _run_of(task, [g if i % 10 else flip[g] for i, g in enumerate(gold)], refs)  # 90% right
    bad = _run_of(task, [g if i % 2 else flip[g] for i, g in enumerate(gold)], refs)  # 50% right
    same = _run_of(task, [g if i % 10 else flip[g] for i, g in enumerate(gold)], refs)
    worse = bootstrap.paired_test(task, "accuracy", [good], [bad])
    equal = bootstrap.paired_test(task, "accuracy", [good], [same])
    assert worse.p_value < 0.01 and equal.p_value > 0.5 and worse.n == 80
    ci = bootstrap.confidence_interval(task, "accuracy", [good])
    assert ci.low <= 90.0 <= ci.high and ci.high - ci.low < 20 and ci.resamples == bootstrap.RESAMPLES
    assert bootstrap.confidence_interval(task, "accuracy", [good]).low == ci.low  # seeded


@pytest.mark.parametrize("task_name,metrics", [("multi30k-en-de", ("bleu", "chrf")), ("sst2", ("binary_f1",)),
                                                ("trec", ("macro_f1",))])
def test_fast_resampling_equals_compute_metrics_on_the_resample(task_name, metrics, shared_data):
    """BLEU/chrF from summed sufficient statistics and F1 from confusion counts are the corpus metrics."""
    from tasks.data.load import load_rows

    task = get_task(task_name)
    rows = load_rows(task, task.eval_split)[:40]
    rng = random.Random(1)
    if task.label_names:  # classification rows: a label index
        refs = [[task.label_names[r["label"]]] for r in rows]
        preds = [r[0] if rng.random() < 0.6 else rng.choice(task.label_names[:3]) for r in refs]
    else:
        refs = [r["references"] for r in rows]
        preds = [r["references"][0] if rng.random() < 0.3 else r["source"] for r in rows]
    run_ = _run_of(task, preds, refs)
    idx = np.random.default_rng(0).integers(0, len(rows), size=(4, len(rows)))
    for metric in metrics:
        fn, fast = bootstrap.sampler(task, metric, run_)
        assert fast
        expected = [compute_metrics([metric], [preds[i] for i in row], [refs[i] for i in row], task.label_names)[metric]
                    for row in idx]
        assert fn(idx) == pytest.approx(expected, abs=1e-6)


def test_pareto_front():
    assert pareto_front([(1, 50), (1, 60), (10, 55), (100, 70), (1000, 65)]) == [(1, 60), (100, 70)]


def test_a_method_has_one_colour_and_its_family_a_hue():
    from matplotlib.colors import to_rgb

    greys = [to_rgb(method_colour(f"baseline:{b}")) for b in ("tfidf-lr", "majority")]
    assert all(r == g == b for r, g, b in greys) and greys[0] != greys[1]
    blues = [to_rgb(method_colour(m, k)) for m, k in (("zero-shot", 0), ("few-shot", 1), ("few-shot", 4),
                                                      ("few-shot-calibrated", 4))]
    assert all(b > r and b > g for r, g, b in blues) and len(set(blues)) == 4
    tuned = {method_colour(f"finetune:{m}") for m in ("full", "linear", "lora", "prompt", "prefix")}
    assert len(tuned) == 5 and method_colour("finetune:lora") == method_colour("finetune:lora")


# ---- bad input ---------------------------------------------------------------------------------------------


def _base(**over):
    return {"models": {"d": "dummy"}, "tasks": ["trec"], "methods": ["zero-shot"], **over}


@pytest.mark.parametrize("over,needle", [
    ({"tasks": ["trek"]}, "unknown task 'trek'. Did you mean 'trec'? Valid tasks: bbc-news, "),
    ({"methods": ["few-shots:4"]}, "unknown method 'few-shots:4'. Valid methods: baseline:<tfidf-lr|majority|lead-k"),
    ({"methods": ["baseline:lead3"]}, "Did you mean 'lead-k'? Valid baselines: tfidf-lr, majority, lead-k, copy-source"),
    ({"methods": ["baseline:lead"]}, "unknown baseline 'lead'. Did you mean 'lead-k'?"),
    ({"methods": ["finetune:qlora"]}, "Valid fine-tuning methods: full, linear, lora, prompt, prefix"),
    ({"methods": ["few-shot:x"]}, "needs a number of shots"),
    ({"budgets": {"epoch": 1}}, "unknown key 'budgets.epoch'; did you mean 'epochs'?"),
    ({"budgets": {"max_eval_examples": "many"}}, "budgets.max_eval_examples: expected an integer"),
    ({"seeds": []}, "seeds is empty"),
    ({"task_budgets": {"sst2": {"limit": 3}}}, "unknown task 'sst2'"),
    ({"modles": {}}, "unknown key 'modles'; did you mean 'models'?"),
    ({"methods": [{"name": "zero-shot", "tasks": ["sst2"]}]}, "methods[0] (zero-shot).tasks (tasks of this config)"),
    ({"methods": ["zero-shot", {"name": "zero-shot", "tasks": ["trec"]}]}, "give them disjoint `tasks:`"),
    ({"output": "../leaderboard"}, "output must be a plain file name stem"),
])
def test_config_errors_name_the_key_the_file_and_the_valid_names(over, needle):
    with pytest.raises(LeaderboardError) as e:
        config_from_dict(_base(**over), "configs/leaderboard/x.yaml")
    assert needle in str(e.value) and "configs/leaderboard/x.yaml" in str(e.value)
    assert isinstance(e.value, GPT2SuiteError) and not isinstance(e.value, ValueError)  # one error module


def test_unknown_model_filter_too_many_shots_and_a_missing_model_folder(tmp_path, shared_data, capsys):
    from tasks.cli.main import main

    cfg = config_from_dict(_base(models={"a": "dummy", "b": "dummy"}), "two.yaml")
    with pytest.raises(LeaderboardError, match=r"unknown model 'c'.*Valid models: a, b"):
        plan(cfg, only_models=["c"])
    too_many = config_from_dict(_base(methods=["few-shot:100000"]), "shots.yaml")
    with pytest.raises(LeaderboardError, match=r"100000 shots asked but the trec train split has only \d+"):
        run(tmp_path / "lb", too_many)
    assert not list((tmp_path / "lb").glob("runs/*.json"))  # failed before anything ran
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_base(models={"m": str(tmp_path / "nothing")})))
    assert main(["leaderboard", "--config", str(bad), "--out", str(tmp_path / "lb2")]) == 2
    err = capsys.readouterr().err
    assert "is not a model folder" in err and err.count("\n") == 1
    assert main(["leaderboard", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml does not exist" in err and err.count("\n") == 1


def test_methods_can_be_narrowed_to_tasks_and_picked_on_the_command_line():
    cfg = config_from_dict(_base(tasks=["sst2", "trec", "wikitext2"], methods=[
        "baseline:majority",
        {"name": "few-shot:4", "seeds": [0, 1], "tasks": ["sst2"]},
        {"name": "few-shot:4", "tasks": ["trec"]},  # the same method, other tasks, other seeds
        {"name": "finetune:lora", "tasks": ["trec"]},
    ], models={"m": "results/backbones/default"}), "narrow.yaml")
    cells, _ = plan(cfg)
    got = {(c.task, c.method.name, c.seed) for c in cells}
    assert got == {("sst2", "baseline:majority", 0), ("trec", "baseline:majority", 0), ("sst2", "few-shot:4", 0),
                   ("sst2", "few-shot:4", 1), ("trec", "few-shot:4", 0), ("trec", "finetune:lora", 0),
                   ("wikitext2", "perplexity", 0)}
    picked, _ = plan(cfg, only_methods=["few-shot:4"], only_tasks=["trec", "sst2"])
    assert {(c.task, c.seed) for c in picked} == {("sst2", 0), ("sst2", 1), ("trec", 0)}
    with pytest.raises(LeaderboardError, match=r"unknown method 'finetune:full'.*Valid methods: baseline:majority"):
        plan(cfg, only_methods=["finetune:full"])


def test_the_output_stem_names_the_rendered_files(tmp_path, shared_data):
    cfg = load_config(TEST_CONFIG)
    cfg.output = "leaderboard_test"
    run(tmp_path / "lb", cfg, render_only=True)
    names = {p.name for p in (tmp_path / "lb").iterdir()}
    assert {"leaderboard_test.md", "leaderboard_test.csv", "leaderboard_test.html"} <= names
    assert not any(n.startswith("leaderboard.") for n in names)
    assert "`leaderboard_test.csv`" in (tmp_path / "lb" / "leaderboard_test.md").read_text()


def test_shipped_configs_parse_and_plan_every_task():
    for name in ("quick", "full", "gpu", "test"):
        cfg = load_config(REPO / "configs" / "leaderboard" / f"{name}.yaml")
        cells, notes = plan(cfg)
        assert cells and {c.task for c in cells} == set(cfg.tasks), name
    quick = load_config(REPO / "configs" / "leaderboard" / "quick.yaml")
    assert set(quick.tasks) == {"sst2", "trec", "squad", "multi30k-en-de", "multi30k-en-fr", "scitldr", "bbc-news",
                                "wikitext2"}
    methods = {m.name for m in quick.methods}
    assert {"zero-shot", "few-shot:4", "finetune:lora"} <= methods and any(m.startswith("baseline:") for m in methods)
    full = load_config(REPO / "configs" / "leaderboard" / "full.yaml")
    kinds = {parse_method(m.name).row_method for m in full.methods}
    assert {f"finetune:{m}" for m in ("full", "linear", "lora", "prompt", "prefix")} <= kinds
    assert "few-shot-calibrated" in kinds
    assert (quick.output, full.output) == ("leaderboard_quick", "leaderboard")  # quick never overwrites full
    # gpu.yaml is full.yaml (`extends`) with squad's whole train split: the same cells, its own output
    gpu = load_config(REPO / "configs" / "leaderboard" / "gpu.yaml")
    assert [m.name for m in gpu.methods] == [m.name for m in full.methods] and gpu.output == "leaderboard_gpu"
    assert gpu.task_budgets["squad"].max_train_examples == 87599 and full.task_budgets["squad"].max_train_examples
    assert gpu.task_budgets["squad"].finetune == full.task_budgets["squad"].finetune  # merged, not replaced
    assert [c.label for c in plan(gpu)[0]] == [c.label for c in plan(full)[0]]


def test_extends_merges_budgets_key_by_key_and_task_by_task(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "models: {d: dummy}\ntasks: [trec, sst2]\nmethods: [zero-shot]\n"
        "budgets: {threads: 1, max_eval_examples: 10}\n"
        "task_budgets: {trec: {epochs: 2, finetune: {lr: 1.0e-4, warmup: 0.1}}, sst2: {epochs: 3}}\n")
    (tmp_path / "top.yaml").write_text(
        "extends: base.yaml\nname: top\nbudgets: {threads: 4}\ntask_budgets: {trec: {finetune: {lr: 3.0e-4}}}\n")
    cfg = load_config(tmp_path / "top.yaml")
    assert cfg.name == "top" and cfg.tasks == ["trec", "sst2"]
    assert (cfg.budgets.threads, cfg.budgets.max_eval_examples) == (4, 10)
    assert cfg.task_budgets["trec"].epochs == 2 and cfg.task_budgets["trec"].finetune == {"lr": 3e-4, "warmup": 0.1}
    assert cfg.task_budgets["sst2"].epochs == 3


def test_dry_run_lists_cells_and_writes_nothing(tmp_path, shared_data, capsys):
    from tasks.cli.main import main

    assert main(["leaderboard", "--config", str(TEST_CONFIG), "--out", str(tmp_path / "lb"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{N_CELLS} cells: 0 cached, {N_CELLS} to run, {N_SKIPPED} skipped" in out and "would run" in out
    assert not (tmp_path / "lb").exists()


# ---- the HTML page -----------------------------------------------------------------------------------------


def test_html_renders_in_headless_chromium_with_every_row(tmp_path, shared_data):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (apt-get install -y chromium); the HTML check needs a headless browser")
    out = tmp_path / "lb"
    run(out)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        dom = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--dump-dom", (out / "leaderboard.html").as_uri()],
            capture_output=True, text=True, timeout=60).stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    # The table is built by the page's script from the embedded data: rows exist only if the JS ran.
    start = dom.index('<table id="leaderboard"')
    table = dom[start:dom.index("</table>", start)]
    assert table.count("<tr") == N_PRIMARY_ROWS + 1  # + the header row
    assert f'data-rows="{N_PRIMARY_ROWS}"' in table and "baseline:tfidf-lr" in table and "▼" in table
    assert "bits per byte" in table and "BLEU" in table  # metrics named by the registry's labels
    heads = re.findall(r"<th[^>]*>(.*?)</th>", table)  # human headers, the test by the value, the record last
    assert heads[5:8] == ["value", "95% CI", "vs best"] and heads[-1] == "record" and "ci_low" not in heads
    assert table.count(">json</a>") == N_PRIMARY_ROWS
    assert all(len(lo.split(".")[1]) == len(hi.split(".")[1]) == 2
               for lo, hi in re.findall(r"\[(-?[\d.]+), (-?[\d.]+)\]", table))
    # The "Best per task" summary, cell for cell the Markdown's.
    summary = dom[dom.index('<table id="summary"'):start]
    cells = [re.sub(r"<[^>]+>", "", c.replace("<br>", ": ")) for c in re.findall(r"<td>(.*?)</td>", summary)]
    md = (out / "leaderboard.md").read_text().split("## Every row")[0]
    md_cells = [c.strip() for line in md.splitlines() if line.startswith("| ") and not line.startswith("| task")
                for c in line.strip("|").split(" | ")]
    assert cells == md_cells and len(cells) == 6 * 3
    assert dom.count('src="data:image/png;base64,') == 2


def test_a_slice_renders_the_whole_config_and_never_shrinks_the_table(tmp_path, monkeypatch):
    counter = Counter(monkeypatch)
    run(tmp_path / "lb")
    csv = next((tmp_path / "lb").glob("*.csv"))
    before = csv.read_text().splitlines()
    assert len(before) == N_CSV_ROWS + 1 and len(counter.calls) == N_CELLS
    sliced, _ = run(tmp_path / "lb", only_tasks=["trec"], only_methods=["zero-shot"])
    assert len(counter.calls) == N_CELLS  # the slice's one cell was cached: nothing new ran
    assert len(sliced.cells) == N_CELLS and csv.read_text().splitlines() == before
    fresh, logs = run(tmp_path / "lb2", only_tasks=["trec"], only_methods=["zero-shot"])
    assert len(counter.calls) == N_CELLS + 1  # only the slice ran
    assert fresh.count("missing") == N_CELLS - 1 and fresh.count("ran") == 1
    assert any("rendering the whole config" in line for line in logs)


def test_the_default_output_folder_is_ignored_by_git():
    from tasks.evaluation.records import DEFAULT_RUNS_DIR
    from tasks.leaderboard.run import DEFAULT_OUT

    for folder in (DEFAULT_OUT, DEFAULT_RUNS_DIR):
        probe = folder / "probe.json"
        out = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=REPO)
        assert out.returncode == 0, f"{folder} is not ignored by git: ad-hoc outputs would dirty the tree"


def test_peak_memory_is_the_cells_own(tmp_path, monkeypatch):
    from tasks.evaluation.records import peak_memory_mb

    Counter(monkeypatch)
    result, _ = run(tmp_path / "lb")
    ran = [s.record for s in result.cells if s.status == "ran"]
    assert len(ran) == N_CELLS
    for record in ran:
        assert record.details["memory"]["peak_memory_mb"] == record.peak_memory_mb
        # a dummy-model cell adds little; the process' own high-water mark holds the test session's models
        assert 0 <= record.peak_memory_mb < peak_memory_mb()


def test_a_run_prints_one_line_per_cell_and_no_library_noise(tmp_path):
    import sys

    out = subprocess.run([sys.executable, "-m", "tasks.cli.main", "leaderboard", "--config", str(TEST_CONFIG),
                          "--out", str(tmp_path / "lb")], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = (out.stdout + out.stderr).splitlines()
    assert sum(" done " in line for line in lines) == N_CELLS
    noise = [line for line in lines if any(w in line for w in ("Warning", "Generating", "examples/s", "it/s]"))]
    assert not noise, noise[:5]
    assert sum(line.startswith("skip") for line in lines) == 1


def test_an_interrupted_run_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    # Ctrl-C (or the SIGINT a time limit sends) ends the command with one line and status 130, no traceback.
    import tasks.leaderboard.run
    from tasks.cli.main import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tasks.leaderboard.run, "run_leaderboard", interrupted)
    assert main(["leaderboard", "--config", str(TEST_CONFIG), "--out", str(tmp_path / "lb")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpt2suite leaderboard: interrupted")


def test_records_moved_to_another_folder_are_still_reused(tmp_path, shared_data):
    # Published records are copied (results/runs of another clone, a worktree's run folder): a record names its
    # predictions by the path it was written at, and the file of that name beside it is used when that is gone.
    first, _ = run(tmp_path / "a")
    assert first.count("ran") == N_CELLS
    (tmp_path / "b").mkdir()
    shutil.move(tmp_path / "a" / "runs", tmp_path / "b" / "runs")
    again, logs = run(tmp_path / "b", render_only=True)
    assert again.count("cached") == N_CELLS and not again.failed, logs
