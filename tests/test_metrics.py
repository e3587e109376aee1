"""tasks.metrics equals the reference libraries (scikit-learn, sacreBLEU, rouge_score) and SQuAD's values."""

import math

import pytest

from tasks.metrics import compute_metrics, example_scores, normalize_answer, squad_f1
from tasks.registry import get_task

SST2, TREC, SQUAD = get_task("sst2"), get_task("trec"), get_task("squad")
EN_DE, SCITLDR = get_task("multi30k-en-de"), get_task("scitldr")


def test_sst2_accuracy_and_binary_f1_equal_sklearn():
    from sklearn.metrics import accuracy_score, f1_score

    gold = ["positive", "negative", "positive", "positive", "negative", "negative", "positive"]
    pred = ["positive", "positive", "negative", "positive", "negative", "positive", "positive"]
    m = compute_metrics(SST2, pred, [[g] for g in gold])
    assert m["accuracy"] == pytest.approx(100 * accuracy_score(gold, pred))
    assert m["f1"] == pytest.approx(100 * f1_score(gold, pred, pos_label="positive"))
    # positive class is label_names[1]: tp=3, fp=2, fn=1 -> F1 = 6 / 9
    assert m["f1"] == pytest.approx(100 * 6 / 9)
    assert set(m) == {"accuracy", "f1"}


def test_trec_macro_f1_equals_sklearn_over_all_labels():
    from sklearn.metrics import f1_score

    gold = ["entity", "human", "location", "number", "human", "description"]
    pred = ["entity", "human", "human", "number", "location", "entity"]
    m = compute_metrics(TREC, pred, [[g] for g in gold])
    expected = f1_score(gold, pred, labels=list(TREC.label_names), average="macro", zero_division=0)
    assert m["macro_f1"] == pytest.approx(100 * expected)
    assert m["accuracy"] == pytest.approx(100 * 3 / 6)


def test_classification_rejects_unknown_labels_and_mismatched_lengths():
    with pytest.raises(ValueError, match="not label names"):
        compute_metrics(SST2, ["great"], [["positive"]])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        compute_metrics(SST2, ["positive", "negative"], [["positive"]])
    with pytest.raises(ValueError, match="no predictions"):
        compute_metrics(SST2, [], [])


def test_squad_known_values():
    # Normalisation: case, punctuation, articles and whitespace do not count.
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert squad_f1("Denver", "Denver Broncos") == pytest.approx(2 / 3)
    m = compute_metrics(
        SQUAD,
        ["the Denver Broncos", "Denver", "Santa Clara, California", "nothing"],
        [
            ["Denver Broncos", "Denver Broncos", "Denver Broncos"],
            ["Denver Broncos"],
            ["Santa Clara, California", "Levi's Stadium", "Levi's Stadium in the San Francisco Bay Area"],
            ["gold"],
        ],
    )
    assert m["exact_match"] == pytest.approx(100 * 2 / 4)
    assert m["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0) / 4)


def test_squad_max_over_references():
    # "Levi's Stadium" vs "Levi's Stadium in the San Francisco Bay Area": normalised tokens
    # [levis, stadium] vs [levis, stadium, in, san, francisco, bay, area] -> P=1, R=2/7 -> F1 = 4/9.
    s = example_scores(SQUAD, "Levi's Stadium", ["Levi's Stadium in the San Francisco Bay Area", "Santa Clara"])
    assert s["f1"] == pytest.approx(100 * 4 / 9)
    assert s["exact_match"] == 0.0
    assert example_scores(SQUAD, "santa clara.", ["Levi's Stadium", "Santa Clara"])["exact_match"] == 100.0


def test_translation_equals_sacrebleu_directly():
    import sacrebleu

    hyps = ["Ein Mann fährt Fahrrad .", "Zwei Hunde spielen im Schnee .", "Eine Frau liest ein Buch"]
    refs = ["Ein Mann fährt auf einem Fahrrad .", "Zwei Hunde spielen im Schnee .", "Eine Frau liest eine Zeitung ."]
    m = compute_metrics(EN_DE, hyps, [[r] for r in refs])
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    s = example_scores(EN_DE, hyps[0], [refs[0]])
    assert s["bleu"] == pytest.approx(sacrebleu.sentence_bleu(hyps[0], [refs[0]]).score)
    assert s["chrf"] == pytest.approx(sacrebleu.sentence_chrf(hyps[0], [refs[0]]).score)
    assert example_scores(EN_DE, refs[1], [refs[1]])["bleu"] == pytest.approx(100.0)


def test_translation_uneven_reference_counts_equal_sacrebleu_with_none_padding():
    import sacrebleu

    hyps, refs = ["a cat sat on the mat", "hello"], [["the cat sat on the mat", "a cat sat"], ["hello there"]]
    m = compute_metrics(EN_DE, hyps, refs)
    assert m["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(hyps, [["the cat sat on the mat", "hello there"], ["a cat sat", None]]).score
    )


def test_summarization_equals_rouge_score_max_over_references():
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    preds = ["We propose a new method for training networks faster.", "A study of running dogs."]
    refs = [
        ["A new method trains neural networks faster.", "We propose faster training of networks."],
        ["Dogs that run are studied."],
    ]
    m = compute_metrics(SCITLDR, preds, refs)
    for key in ("rouge1", "rouge2", "rougeL"):
        per = [max(scorer.score(r, p)[key].fmeasure for r in rs) for p, rs in zip(preds, refs)]
        assert m[key] == pytest.approx(100 * sum(per) / len(per))
        assert example_scores(SCITLDR, preds[0], refs[0])[key] == pytest.approx(100 * per[0])
    # The stemmer is on: "running" matches "run", "dogs" matches "dog".
    assert example_scores(SCITLDR, "running dogs", ["run dog"])["rouge1"] == pytest.approx(100.0)


@pytest.mark.parametrize("name", ["sst2", "trec", "squad", "multi30k-en-fr", "scitldr", "bbc-news"])
def test_example_scores_mean_is_the_corpus_metric_and_primary_key_exists(name):
    task = get_task(name)
    if task.kind == "classification":
        preds, refs = [task.label_names[0], task.label_names[1]], [[task.label_names[0]], [task.label_names[0]]]
    else:
        preds, refs = ["the cat sat on a mat", "dogs run"], [["a cat sat on the mat"], ["dogs run fast", "dogs"]]
    corpus = compute_metrics(task, preds, refs)
    per = [example_scores(task, p, r) for p, r in zip(preds, refs)]
    assert task.primary_metric in per[0]
    assert set(corpus) == set(task.metrics)
    if task.primary_metric != "bleu":  # sentence BLEU is not additive; the others are means
        mean = sum(s[task.primary_metric] for s in per) / len(per)
        assert corpus[task.primary_metric] == pytest.approx(mean)
    assert all(0.0 <= v <= 100.0 and not math.isnan(v) for v in corpus.values())
