"""Task specs: every spec file loads and its rows have its kind's layout; a bad spec fails with a clear message;
carved splits are a seeded, stable partition."""

import textwrap

import pytest

from tasks.data.load import carve, load_rows
from tasks.data.registry import available_tasks, get_task, load_spec
from tasks.errors import GPT2SuiteError, TaskError
from tasks.kinds import get_kind


def _write(tmp_path, name, body):
    f = tmp_path / f"{name}.yaml"
    f.write_text(textwrap.dedent(body))
    return f


GOOD = """\
    name: {name}
    kind: classification
    data: {{local: classification/ag_news}}
    splits:
      train: {{carve_from: test, share: 0.2}}
      validation: {{carve_from: test, share: 0.1}}
      test: test
    eval_split: test
    fields: {{id: null, text: text, label: label}}
    labels: [world, sports, business, sci/tech]
    metrics: [accuracy, macro_f1]
    primary_metric: accuracy
    prompt: {{input: "Article: {{text}}\\nTopic:", answer: " {{label}}"}}
    baselines: {{majority: {{}}}}
"""


def test_every_spec_loads_and_reads_its_eval_split(shared_data):
    names = available_tasks()
    assert len(names) >= 8
    for name in names:
        spec = get_task(name)
        kind = get_kind(spec.kind)
        if kind.scores_text:
            continue
        rows = load_rows(spec, spec.eval_split)
        assert rows and set(rows[0]) == set(kind.row_fields), name
        assert len({r["id"] for r in rows}) == len(rows), f"{name}: ids repeat"


def test_a_good_spec_in_a_user_folder(tmp_path, monkeypatch):
    _write(tmp_path, "my_news", GOOD.format(name="my_news"))
    monkeypatch.setenv("GPT2SUITE_TASK_PATH", str(tmp_path))
    spec = get_task("my_news")
    assert spec.label_names == ("world", "sports", "business", "sci/tech")
    assert spec.splits["train"].share == 0.2 and spec.splits["test"].share is None


@pytest.mark.parametrize("change, message", [
    (("primary_metric: accuracy", "primary_metirc: accuracy"), "did you mean 'primary_metric'"),
    (("kind: classification", "kind: clasification"), "Did you mean 'classification'"),
    (("metrics: [accuracy, macro_f1]", "metrics: [accuracy, bleu]"), "does not apply to classification"),
    (("primary_metric: accuracy", "primary_metric: f1"), "is not one of metrics"),
    (("share: 0.2", "share: 0.95"), "take more than all of it"),
    (("share: 0.2", "share: 1.5"), "strictly between 0 and 1"),
    (("baselines: {majority: {}}", "baselines: {lead-k: {k: 3}}"), "unknown classification baseline"),
    (("eval_split: test", "eval_split: dev"), "eval_split 'dev' is not one of the splits"),
    (("text: text, label", "txt: text, label"), "missing text"),
    (("labels: [world, sports, business, sci/tech]", "labels: [world]"), "at least two label names"),
    (("    prompt:", "    process_row: no.such.module:f\n    prompt:"), "cannot import"),
])
def test_bad_specs_fail_with_a_clear_message(tmp_path, change, message):
    body = GOOD.format(name="bad").replace(*change)
    assert body != GOOD.format(name="bad")
    with pytest.raises(TaskError, match=message) as e:
        load_spec(_write(tmp_path, "bad", body))
    assert isinstance(e.value, GPT2SuiteError) and "bad.yaml" in str(e.value)


def test_a_spec_named_unlike_its_file_is_refused(tmp_path):
    with pytest.raises(TaskError, match="call the file"):
        load_spec(_write(tmp_path, "other", GOOD.format(name="mine")))


def test_unknown_task_lists_close_matches():
    with pytest.raises(TaskError, match="Did you mean 'sst2'"):
        get_task("sst3")


def test_carved_splits_partition_their_source(tmp_path):
    spec = load_spec(_write(tmp_path, "carved", GOOD.format(name="carved")))
    rows = [{"id": str(i)} for i in range(5000)]
    parts = {s: carve(spec, s, rows) for s in ("train", "validation", "test")}
    ids = [r["id"] for p in parts.values() for r in p]
    assert sorted(ids, key=int) == [r["id"] for r in rows]  # disjoint and complete
    assert abs(len(parts["train"]) / 5000 - 0.2) < 0.02 and abs(len(parts["validation"]) / 5000 - 0.1) < 0.02
    assert carve(spec, "train", rows) == parts["train"]  # stable
    reseeded = load_spec(_write(tmp_path, "carved", GOOD.format(name="carved").replace(
        "share: 0.2}", "share: 0.2, seed: 1}").replace("share: 0.1}", "share: 0.1, seed: 1}")))
    assert carve(reseeded, "train", rows) != parts["train"]  # the seed changes the carve
