"""tasks.evaluation.metrics equals the reference libraries (scikit-learn, sacreBLEU, rouge_score) and SQuAD's
values, for the metric names a spec lists."""

import math

import pytest

from tasks.data.registry import available_tasks, get_task
from tasks.errors import DataError
from tasks.evaluation.metrics import METRICS, compute_metrics, example_scores, metric, normalize_answer, answer_f1
from tasks.kinds import get_kind

SST2, TREC, SQUAD = get_task("sst2"), get_task("trec"), get_task("squad")
EN_DE, SCITLDR = get_task("multi30k-en-de"), get_task("scitldr")


def scores(spec, predictions, references):
    return compute_metrics(spec.metrics, predictions, references, spec.label_names)


def test_sst2_accuracy_and_binary_f1_equal_sklearn():
    from sklearn.metrics import accuracy_score, f1_score

    gold = ["positive", "negative", "positive", "positive", "negative", "negative", "positive"]
    pred = ["positive", "positive", "negative", "positive", "negative", "positive", "positive"]
    m = scores(SST2, pred, [[g] for g in gold])
    assert m["accuracy"] == pytest.approx(100 * accuracy_score(gold, pred))
    assert m["binary_f1"] == pytest.approx(100 * f1_score(gold, pred, pos_label="positive"))
    # positive class is label_names[1]: tp=3, fp=2, fn=1 -> F1 = 6 / 9
    assert m["binary_f1"] == pytest.approx(100 * 6 / 9)
    assert list(m) == list(SST2.metrics) == ["accuracy", "binary_f1"]


def test_trec_macro_f1_equals_sklearn_over_all_labels():
    from sklearn.metrics import f1_score

    gold = ["entity", "human", "location", "number", "human", "description"]
    pred = ["entity", "human", "human", "number", "location", "entity"]
    m = scores(TREC, pred, [[g] for g in gold])
    expected = f1_score(gold, pred, labels=list(TREC.label_names), average="macro", zero_division=0)
    assert m["macro_f1"] == pytest.approx(100 * expected)
    assert m["accuracy"] == pytest.approx(100 * 3 / 6)


def test_classification_rejects_unknown_labels_and_mismatched_lengths():
    with pytest.raises(DataError, match="not label names"):
        scores(SST2, ["great"], [["positive"]])
    with pytest.raises(DataError, match="2 predictions but 1"):
        scores(SST2, ["positive", "negative"], [["positive"]])
    with pytest.raises(DataError, match="no predictions"):
        scores(SST2, [], [])
    with pytest.raises(DataError, match="non-empty list"):
        scores(SQUAD, ["x"], ["x"])  # a string is not a list of references
    with pytest.raises(DataError, match="unknown metric 'accuracyy'"):
        compute_metrics(["accuracyy"], ["a"], [["a"]])


def test_squad_known_values():
    # Normalisation: case, punctuation, articles and whitespace do not count.
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert answer_f1("Denver", "Denver Broncos") == pytest.approx(2 / 3)
    m = scores(
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
    s = example_scores(SQUAD.metrics, "Levi's Stadium", ["Levi's Stadium in the San Francisco Bay Area", "Santa Clara"])
    assert s["f1"] == pytest.approx(100 * 4 / 9)
    assert s["exact_match"] == 0.0
    assert example_scores(SQUAD.metrics, "santa clara.", ["Levi's Stadium", "Santa Clara"])["exact_match"] == 100.0


def test_translation_equals_sacrebleu_directly():
    import sacrebleu

    hyps = ["Ein Mann fährt Fahrrad .", "Zwei Hunde spielen im Schnee .", "Eine Frau liest ein Buch"]
    refs = ["Ein Mann fährt auf einem Fahrrad .", "Zwei Hunde spielen im Schnee .", "Eine Frau liest eine Zeitung ."]
    m = scores(EN_DE, hyps, [[r] for r in refs])
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    s = example_scores(EN_DE.metrics, hyps[0], [refs[0]])
    assert s["bleu"] == pytest.approx(sacrebleu.sentence_bleu(hyps[0], [refs[0]]).score)
    assert s["chrf"] == pytest.approx(sacrebleu.sentence_chrf(hyps[0], [refs[0]]).score)
    assert example_scores(EN_DE.metrics, refs[1], [refs[1]])["bleu"] == pytest.approx(100.0)


def test_translation_uneven_reference_counts_equal_sacrebleu_with_none_padding():
    import sacrebleu

    hyps, refs = ["a cat sat on the mat", "hello"], [["the cat sat on the mat", "a cat sat"], ["hello there"]]
    m = scores(EN_DE, hyps, refs)
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
    m = scores(SCITLDR, preds, refs)
    for key in ("rouge1", "rouge2", "rougeL"):
        per = [max(scorer.score(r, p)[key].fmeasure for r in rs) for p, rs in zip(preds, refs)]
        assert m[key] == pytest.approx(100 * sum(per) / len(per))
        assert example_scores(SCITLDR.metrics, preds[0], refs[0])[key] == pytest.approx(100 * per[0])
    # The stemmer is on: "running" matches "run", "dogs" matches "dog".
    assert example_scores(SCITLDR.metrics, "running dogs", ["run dog"])["rouge1"] == pytest.approx(100.0)


# Every task scored example by example (not the whole-document ones, whose metrics come from log-likelihoods).
EXAMPLE_TASKS = [n for n in available_tasks() if not get_kind(get_task(n).kind).scores_text]


@pytest.mark.parametrize("name", EXAMPLE_TASKS)
def test_example_scores_mean_is_the_corpus_metric_and_primary_key_exists(name):
    task = get_task(name)
    if task.label_names:
        preds, refs = [task.label_names[0], task.label_names[1]], [[task.label_names[0]], [task.label_names[0]]]
    else:
        preds, refs = ["the cat sat on a mat", "dogs run"], [["a cat sat on the mat"], ["dogs run fast", "dogs"]]
    corpus = scores(task, preds, refs)
    per = [example_scores(task.metrics, p, r) for p, r in zip(preds, refs)]
    assert task.primary_metric in per[0]
    assert list(corpus) == list(task.metrics)
    for m in task.metrics:
        if metric(m).mean_of_examples:  # the registry says which corpus values are means of the examples'
            assert corpus[m] == pytest.approx(sum(s[m] for s in per) / len(per)), m
    assert all(0.0 <= v <= 100.0 and not math.isnan(v) for v in corpus.values())


def test_every_spec_metric_is_registered_for_its_kind():
    for name in available_tasks():
        spec = get_task(name)
        for m in spec.metrics:
            assert get_kind(spec.kind).name in METRICS[m].kinds, (name, m)
