"""Classic baselines (tasks.methods.baselines) on real data: they beat trivial expectations, take their parameters
from the spec, and go through the metrics and the one run-record writer."""

import dataclasses

import pytest

from tasks.data.load import load_rows
from tasks.data.registry import available_tasks, get_task
from tasks.errors import MethodError
from tasks.evaluation.metrics import normalize_answer
from tasks.evaluation.records import read_predictions, read_record
from tasks.kinds import KINDS
from tasks.methods.baselines import (BASELINES, baseline_params, best_sentence, best_sentence_span, lead_k,
                                     majority_label, run_baseline, spec_baselines, split_sentences,
                                     write_baseline_run)


@pytest.fixture(scope="module")
def sst2(shared_data):
    return load_rows("sst2", "train")[:2000], load_rows("sst2", "validation")


def with_baselines(spec, **baselines):
    return dataclasses.replace(spec, baselines=baselines)


def test_the_registry_matches_what_the_kinds_allow():
    for kind in KINDS.values():
        assert set(kind.baselines) == {b.name for b in BASELINES.values() if b.kind == kind.name}, kind.name


@pytest.mark.parametrize("name", [n for n in available_tasks() if get_task(n).baselines])
def test_every_listed_baseline_of_every_task_writes_a_valid_record(name, tmp_path, shared_data):
    spec = get_task(name)
    assert spec_baselines(spec) and set(spec_baselines(spec)) == set(spec.baselines)
    for method in spec_baselines(spec):
        result = run_baseline(spec, method, limit=8, max_train=300, seed=1)
        rec = read_record(write_baseline_run(result, runs_dir=tmp_path))
        assert rec.method == f"baseline-{method}" and rec.model["path"] == "none" and rec.seed == 1
        assert set(rec.metrics) == set(spec.metrics) and rec.n_examples == 8
        assert all(spec.primary_metric in p["scores"] for p in read_predictions(rec.predictions))
        for key, value in baseline_params(spec, method).items():
            assert rec.config[key] == value


def test_majority_is_the_share_of_the_majority_class(sst2, tmp_path):
    train, val = sst2
    task = get_task("sst2")
    result = run_baseline(task, "majority", train_rows=train, eval_rows=val)
    label = majority_label(train)
    share = sum(r["label"] == label for r in val) / len(val)
    assert result.metrics["accuracy"] == pytest.approx(100 * share)
    assert {r["prediction"] for r in result.rows} == {task.label_names[label]}
    rec = read_record(write_baseline_run(result, runs_dir=tmp_path))
    assert rec.method == "baseline-majority" and rec.n_examples == len(val)
    assert len(read_predictions(rec.predictions)) == len(val)


def test_tfidf_lr_on_2000_sst2_examples_beats_70_percent(sst2, tmp_path):
    train, val = sst2
    spec = get_task("sst2")
    result = run_baseline(spec, train_rows=train, eval_rows=val)  # the default: the strongest listed
    assert result.method == "tfidf-lr" and result.metrics["accuracy"] > 70.0
    assert result.trainable_params > 1000 and result.config["n_train"] == 2000 and result.config["C"] == 10.0
    rec = read_record(write_baseline_run(result, runs_dir=tmp_path))
    assert rec.metrics["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert rec.train_seconds is not None and rec.trainable_params == result.trainable_params
    # C comes from the spec: a strongly regularised model is a different (worse) one.
    weak = run_baseline(with_baselines(spec, **{"tfidf-lr": {"C": 0.01}}), train_rows=train, eval_rows=val)
    assert weak.config["C"] == 0.01 and weak.metrics["accuracy"] < result.metrics["accuracy"]


def test_majority_ties_go_to_the_smaller_label():
    assert majority_label([{"label": 1}, {"label": 0}]) == 0
    assert majority_label([{"label": 2}, {"label": 2}, {"label": 0}]) == 2


def test_lead_k_takes_the_first_k_sentences():
    text = "First one. Second one! Third? Fourth 4.5 stays whole. Fifth."
    assert split_sentences(text) == ["First one.", "Second one!", "Third?", "Fourth 4.5 stays whole.", "Fifth."]
    assert lead_k(text, 1) == "First one."
    assert lead_k(text, 3) == "First one. Second one! Third?"


def test_lead_k_reads_k_from_the_spec():
    spec = get_task("scitldr")
    rows = [{"id": "1", "source": "One. Two. Three. Four.", "references": ["One."]}]
    assert run_baseline(spec, eval_rows=rows).rows[0]["prediction"] == "One."  # the spec says k: 1
    two = run_baseline(with_baselines(spec, **{"lead-k": {"k": 2}}), eval_rows=rows)
    assert two.config["k"] == 2 and two.rows[0]["prediction"] == "One. Two."
    assert run_baseline(with_baselines(spec, **{"lead-k": {}}), eval_rows=rows).config["k"] == 3  # the default
    with pytest.raises(MethodError, match="(?i)baselines.lead-k: unknown parameter 'kk'. did you mean 'k'"):
        run_baseline(with_baselines(spec, **{"lead-k": {"kk": 2}}), eval_rows=rows)
    with pytest.raises(MethodError, match="takes no parameters"):
        run_baseline(with_baselines(get_task("multi30k-en-de"), **{"copy-source": {"k": 2}}), eval_rows=rows)


def test_lead_3_on_bbc_news_scores_like_an_extractive_baseline(shared_data):
    # BBC News Summary's reference summaries are extracted sentences, so lead-3 overlaps them strongly.
    result = run_baseline(get_task("bbc-news"), limit=60)
    assert result.method == "lead-k" and result.config["k"] == 3
    assert result.metrics["rouge1"] > 30 and result.metrics["rouge2"] > 15
    empty = run_baseline(get_task("bbc-news"), limit=60, eval_rows=[
        {**r, "source": "Nothing."} for r in load_rows("bbc-news", "test")[:60]])
    assert result.metrics["rougeL"] > empty.metrics["rougeL"] + 15


def test_lead_1_on_scitldr_and_copy_source_on_multi30k(shared_data):
    sci = run_baseline(get_task("scitldr"), limit=100)
    assert sci.config["k"] == 1 and 15 < sci.metrics["rouge1"] < 60
    copy = run_baseline(get_task("multi30k-en-de"), limit=200)
    assert copy.method == "copy-source"
    # Copying English scores low but above zero in chrF (names, numbers and cognates are shared).
    assert 5 < copy.metrics["chrf"] < 40 and copy.metrics["bleu"] < 5


def test_qa_best_sentence_finds_the_answer_sentence(shared_data):
    rows = load_rows("squad", "validation")[:300]
    hit = sum(any(normalize_answer(a) in normalize_answer(best_sentence(r["question"], r["context"]))
                  for a in r["answers"]["text"]) for r in rows)
    # A random sentence holds the answer about 1 time in 5 (SQuAD paragraphs have ~5 sentences).
    assert hit / len(rows) > 0.45
    sentence = run_baseline(get_task("squad"), "best-sentence", eval_rows=rows)
    span = run_baseline(get_task("squad"), "best-sentence-span", eval_rows=rows)
    assert sentence.metrics["f1"] > 10 and span.metrics["exact_match"] > sentence.metrics["exact_match"]


def test_best_sentence_span_removes_question_words():
    context = "The sky is blue. Super Bowl 50 was won by the Denver Broncos in 2016."
    question = "Who won Super Bowl 50?"
    assert best_sentence(question, context) == "Super Bowl 50 was won by the Denver Broncos in 2016."
    assert best_sentence_span(question, context) == "by the Denver Broncos in 2016"


def test_a_baseline_the_spec_does_not_list_is_a_clear_error():
    squad = get_task("squad")
    with pytest.raises(MethodError, match="does not apply to squad .*best-sentence, best-sentence-span"):
        run_baseline(squad, "majority", eval_rows=[])
    with pytest.raises(MethodError, match="(?i)did you mean 'majority'"):
        run_baseline(get_task("sst2"), "majorty", eval_rows=[])
    # Listed by nothing: a kind's baseline that this spec leaves out does not run either.
    sst2 = with_baselines(get_task("sst2"), majority={})
    with pytest.raises(MethodError, match="its spec lists majority"):
        run_baseline(sst2, "tfidf-lr", eval_rows=[])
    with pytest.raises(MethodError, match="lists no baselines"):
        run_baseline(with_baselines(squad), eval_rows=[])


def test_a_limited_run_scores_the_leaderboards_examples(shared_data):
    # `gpt2suite baseline --limit N` scores the first N of the fixed shuffle every other method and the leaderboard
    # score (not the first N rows of the file), so its number compares with theirs.
    from tasks.evaluation.predict import eval_rows

    spec = get_task("bbc-news")
    result = run_baseline(spec, limit=20)
    assert [r["id"] for r in result.rows] == [str(r["id"]) for r in eval_rows(spec, spec.eval_split, 20)]
    assert [r["id"] for r in result.rows] != [str(r["id"]) for r in load_rows(spec, spec.eval_split)[:20]]
