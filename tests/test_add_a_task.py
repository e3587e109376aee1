"""A new user adds AG News (test split only upstream) as one YAML file in their own folder, with a seeded
carved train and validation part, and runs zero-shot, 4-shot, a classic baseline and LoRA fine-tuning on it,
end to end on the tiny preset. No Python is written for it."""

import textwrap

import pytest

AG_NEWS = """\
    # AG News topic classification; upstream has only a test split here, so train/validation are carved from it.
    name: ag_news
    kind: classification
    version: 1
    data: {local: classification/ag_news, hub: fancyzhx/ag_news}
    splits:
      train: {carve_from: test, share: 0.2, seed: 7}
      validation: {carve_from: test, share: 0.05, seed: 7}
      test: test
    eval_split: test
    fields: {id: null, text: text, label: label}
    labels: [world, sports, business, sci/tech]
    metrics: [accuracy, macro_f1]
    primary_metric: accuracy
    prompt: {input: "Article: {text}\\nTopic:", answer: " {label}"}
    baselines: {majority: {}, tfidf-lr: {C: 10.0}}
"""


@pytest.fixture()
def ag_news(tmp_path, monkeypatch, shared_data):
    folder = tmp_path / "my_tasks"
    folder.mkdir()
    (folder / "ag_news.yaml").write_text(textwrap.dedent(AG_NEWS))
    monkeypatch.setenv("GPT2SUITE_TASK_PATH", str(folder))
    from tasks.data.registry import get_task

    return get_task("ag_news")


def test_the_carved_splits_are_disjoint_and_sized(ag_news):
    from tasks.data.load import load_rows

    parts = {s: load_rows(ag_news, s) for s in ("train", "validation", "test")}
    ids = [set(r["id"] for r in rows) for rows in parts.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(len(i) for i in ids) == 7600
    assert abs(len(parts["train"]) - 0.2 * 7600) < 100 and abs(len(parts["validation"]) - 0.05 * 7600) < 60


def test_prompting_baseline_and_lora_end_to_end(ag_news, tiny_backbone, tmp_path, one_thread):
    from tasks.methods.baselines import run_baseline, write_baseline_run
    from tasks.methods.fewshot import run_fewshot, write_run
    from tasks.methods.finetune.config import load_finetune_config
    from tasks.methods.finetune.run import finetune
    from tasks.models.lm import GPT2LM
    from tasks.evaluation.records import read_predictions, read_record

    runs = tmp_path / "runs"
    lm = GPT2LM.from_path(tiny_backbone, batch_size=8)
    for shots in (0, 4):
        result = run_fewshot(lm, ag_news, shots, seed=0, limit=12)
        assert len(result.rows) == 12 and set(result.metrics) == {"accuracy", "macro_f1", "accuracy_norm"}
        if shots:
            assert all(r["details"]["demos_used"] + r["details"]["demos_dropped"] == 4 for r in result.rows)
        record = read_record(write_run(result, str(tiny_backbone), 12, runs_dir=runs))
        assert record.task == "ag_news" and record.shots == shots

    baseline = run_baseline(ag_news, "tfidf-lr", limit=200)
    assert baseline.metrics["accuracy"] > 40  # TF-IDF + LR on ~1,500 news articles: far above 25% chance
    path = write_baseline_run(baseline, runs_dir=runs)
    assert len(read_predictions(read_record(path).predictions)) == 200

    cfg = load_finetune_config(ag_news, "lora", overrides={"max_steps": 3, "batch_size": 4, "max_length": 64,
                                                           "max_train_examples": 24, "val_examples": 8,
                                                           "max_eval_examples": 16, "progress": False})
    record = finetune(ag_news, "lora", tiny_backbone, cfg, out_dir=tmp_path / "lora", runs_dir=runs)
    assert record.method == "lora" and record.n_examples == 16 and 0 <= record.metrics["accuracy"] <= 100
    assert record.details["training"]["global_steps"] == 3
    assert (tmp_path / "lora" / "model" / "adapter_config.json").is_file()
