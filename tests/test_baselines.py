"""Classic baselines on real data: they beat trivial expectations and go through metrics + run records."""


import pytest

from tasks.baselines import (best_sentence, best_sentence_span, lead_k, majority_label, run_baseline,
                             split_sentences, write_baseline_run)
from tasks.metrics import normalize_answer
from tasks.records import read_predictions, read_record
from tasks.registry import TaskError, get_task, load_split


@pytest.fixture(scope="module")
def sst2(shared_data):
    return load_split("sst2", "train").to_list()[:2000], load_split("sst2", "validation").to_list()


def test_majority_is_the_share_of_the_majority_class(sst2, tmp_path):
    train, val = sst2
    task = get_task("sst2")
    result = run_baseline(task, "majority", train_rows=train, eval_rows=val)
    label = majority_label(train)
    share = sum(r["label"] == label for r in val) / len(val)
    assert result.metrics["accuracy"] == pytest.approx(100 * share)
    assert {r["prediction"] for r in result.rows} == {task.label_names[label]}
    rec = read_record(write_baseline_run(result, runs_dir=tmp_path))
    assert rec["method"] == "baseline-majority" and rec["n_examples"] == len(val)
    assert len(read_predictions(rec["predictions"])) == len(val)


def test_tfidf_lr_on_2000_sst2_examples_beats_70_percent(sst2, tmp_path):
    train, val = sst2
    result = run_baseline(get_task("sst2"), "tfidf-lr", train_rows=train, eval_rows=val)
    assert result.metrics["accuracy"] > 70.0
    assert result.trainable_params > 1000 and result.config["n_train"] == 2000
    rec = read_record(write_baseline_run(result, runs_dir=tmp_path))
    assert rec["metrics"]["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert rec["train_seconds"] is not None


def test_majority_ties_go_to_the_smaller_label():
    assert majority_label([{"label": 1}, {"label": 0}]) == 0
    assert majority_label([{"label": 2}, {"label": 2}, {"label": 0}]) == 2


def test_lead_k_takes_the_first_k_sentences():
    text = "First one. Second one! Third? Fourth 4.5 stays whole. Fifth."
    assert split_sentences(text) == ["First one.", "Second one!", "Third?", "Fourth 4.5 stays whole.", "Fifth."]
    assert lead_k(text, 1) == "First one."
    assert lead_k(text, 3) == "First one. Second one! Third?"


def test_lead_3_on_bbc_news_scores_like_an_extractive_baseline(shared_data):
    # BBC News Summary's reference summaries are extracted sentences, so lead-3 overlaps them strongly.
    result = run_baseline(get_task("bbc-news"), limit=60)
    assert result.method == "lead-k" and result.config["k"] == 3
    assert result.metrics["rouge1"] > 30 and result.metrics["rouge2"] > 15
    empty = run_baseline(get_task("bbc-news"), limit=60, eval_rows=[
        {**r, "source": "Nothing."} for r in load_split("bbc-news", "test").to_list()[:60]])
    assert result.metrics["rougeL"] > empty.metrics["rougeL"] + 15


def test_lead_1_on_scitldr_and_copy_source_on_multi30k(shared_data):
    sci = run_baseline(get_task("scitldr"), limit=100)
    assert sci.config["k"] == 1 and 15 < sci.metrics["rouge1"] < 60
    copy = run_baseline(get_task("multi30k-en-de"), limit=200)
    assert copy.method == "copy-source"
    # Copying English scores low but above zero in chrF (names, numbers and cognates are shared).
    assert 5 < copy.metrics["chrf"] < 40 and copy.metrics["bleu"] < 5


def test_qa_best_sentence_finds_the_answer_sentence(shared_data):
    rows = load_split("squad", "validation").to_list()[:300]
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


def test_bad_baseline_method_is_a_clear_error():
    with pytest.raises(TaskError, match="does not apply to squad"):
        run_baseline(get_task("squad"), "majority", eval_rows=[])
