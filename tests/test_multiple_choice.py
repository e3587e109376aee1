"""Ranking label verbalizers in prompted classification (tasks.kinds.classification + tasks.methods.fewshot): both
rules of lm-evaluation-harness, summed log-likelihood (`acc` -> `accuracy`) and log-likelihood per answer byte
(`acc_norm` -> `accuracy_norm`), calibrated rule by rule; the demos a prompt really held; the leaderboard label."""

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tasks.data.load import load_rows
from tasks.data.registry import get_task
from tasks.evaluation.metrics import compute_metrics
from tasks.evaluation.records import read_predictions, read_record
from tasks.kinds import get_kind
from tasks.leaderboard.render.rows import _shots
from tasks.leaderboard.render.text import method_label
from tasks.methods.fewshot import build_prompt, run_fewshot, write_run
from tasks.models.lm import DummyLM, GPT2LM

# A two-label task whose verbalizers differ in length: " no" is 3 bytes, " absolutely" 11.
YES_NO = dataclasses.replace(get_task("sst2"), labels=["no", "absolutely"])
LABEL_BYTES = {"no": 3, "absolutely": 11}


def table_lm(table: dict[str, tuple[float, float]]) -> DummyLM:
    """Summed log-likelihoods by hand: table[text] = (ll(" no"), ll(" absolutely")) after any prompt ending in text."""

    def score(ctx: str, cont: str) -> float:
        text = ctx.rsplit("Review: ", 1)[-1].split("\n")[0]
        return table[text][[" no", " absolutely"].index(cont)]

    return DummyLM(score_fn=score)


def evals(gold: dict[str, str]) -> list[dict]:
    return [{"id": str(i), "text": t, "label": YES_NO.labels.index(g)} for i, (t, g) in enumerate(gold.items())]


def test_the_two_rules_disagree_when_the_longer_label_has_the_lower_sum_but_the_higher_per_byte_score():
    # sum: -3.0 > -4.4 -> "no"; per byte: -3.0 / 3 = -1.0 < -4.4 / 11 = -0.4 -> "absolutely"
    result = run_fewshot(table_lm({"x": (-3.0, -4.4)}), YES_NO, 0, eval_rows=evals({"x": "no"}))
    [row] = result.rows
    assert row["prediction"] == "no" and row["details"]["prediction_norm"] == "absolutely"
    assert row["details"]["label_loglikelihoods"] == {"no": -3.0, "absolutely": -4.4}
    assert row["details"]["label_bytes"] == LABEL_BYTES
    assert row["scores"]["accuracy"] == 100.0 and row["scores"]["accuracy_norm"] == 0.0
    assert result.metrics["accuracy"] == 100.0 and result.metrics["accuracy_norm"] == 0.0


def test_both_rules_equal_lm_eval_acc_and_acc_norm_on_a_hand_computed_example(tmp_path):
    table = {"alpha": (-3.0, -4.4), "bravo": (-6.0, -5.5), "charlie": (-1.5, -11.0), "delta": (-3.3, -5.5)}
    gold = {"alpha": "no", "bravo": "absolutely", "charlie": "no", "delta": "absolutely"}
    # By hand: sum argmax = no, absolutely, no, no -> 3 of 4 right; per byte (/3, /11): -1.0|-0.4, -2.0|-0.5,
    # -0.5|-1.0, -1.1|-0.5 -> absolutely, absolutely, no, absolutely -> 3 of 4 right, but not the same 3.
    result = run_fewshot(table_lm(table), YES_NO, 0, eval_rows=evals(gold))
    # lm-eval's MultipleChoiceTask.process_results, step for step (choices are the verbalizers here)
    choices = [" no", " absolutely"]
    completion_len = np.array([float(len(c)) for c in choices])
    target = {t: choices.index(" " + g) for t, g in gold.items()}
    acc = [float(np.argmax(table[t]) == target[t]) for t in gold]
    acc_norm = [float(np.argmax(np.array(table[t]) / completion_len) == target[t]) for t in gold]
    assert (acc, acc_norm) == ([1, 1, 1, 0], [0, 1, 1, 1])
    assert [r["scores"]["accuracy"] / 100 for r in result.rows] == acc
    assert [r["scores"]["accuracy_norm"] / 100 for r in result.rows] == acc_norm
    assert result.metrics["accuracy"] == result.metrics["accuracy_norm"] == 75.0
    # F1 is the sum rule's: "absolutely" (labels[1]) is the positive class, predicted once, rightly: P=1, R=1/2
    assert result.metrics["binary_f1"] == pytest.approx(100 * 2 / 3)
    rec = read_record(write_run(result, "dummy", None, runs_dir=tmp_path))
    assert rec.metrics == pytest.approx({"accuracy": 75.0, "binary_f1": 100 * 2 / 3, "accuracy_norm": 75.0})
    assert rec.config["scoring"] == {"accuracy": "sum of log-likelihoods (lm-eval acc)",
                                     "binary_f1": "sum of log-likelihoods (lm-eval acc)",
                                     "accuracy_norm": "log-likelihood / answer bytes (lm-eval acc_norm)"}


def test_calibration_applies_to_each_rules_own_scores():
    def score(ctx: str, cont: str) -> float:  # a bias toward " absolutely" that grows with the prompt's length
        return (-1.0 if cont == " no" else -1.5 + len(ctx) % 7 / 2) - len(cont) / 10

    rows = [{"id": str(i), "text": "w" * i, "label": i % 2} for i in range(12)]
    train = [{"id": f"t{i}", "text": f"demo {i}", "label": i % 2} for i in range(4)]
    result = run_fewshot(DummyLM(score_fn=score), YES_NO, 2, calibrate=True, train_rows=train, eval_rows=rows)
    p_cf = result.info["content_free_label_probs"]
    assert p_cf["accuracy"] != pytest.approx(p_cf["accuracy_norm"])
    for r in result.rows:
        d = r["details"]
        for rule, divide in (("accuracy", lambda ll, b: ll), ("accuracy_norm", lambda ll, b: ll / b)):
            s = [divide(d["label_loglikelihoods"][lab], d["label_bytes"][lab]) for lab in YES_NO.labels]
            log_z = math.log(sum(math.exp(x) for x in s))
            want = [x - log_z - math.log(p_cf[rule][lab]) for x, lab in zip(s, YES_NO.labels)]
            assert [d["calibrated_scores"][rule][lab] for lab in YES_NO.labels] == pytest.approx(want)
            best = YES_NO.labels[int(np.argmax(want))]
            assert best == (r["prediction"] if rule == "accuracy" else d["prediction_norm"])


@pytest.fixture(scope="module")
def tiny_lm(tiny_backbone, one_thread):
    return GPT2LM.from_path(tiny_backbone, batch_size=8)


@torch.inference_mode()
def naive_loglikelihood(lm: GPT2LM, ctx: str, cont: str) -> float:
    c, x = lm.encode(ctx), lm.encode(cont)
    logprobs = torch.log_softmax(lm.model(torch.tensor([c + x[:-1]])).logits[0].float(), dim=-1)
    return sum(logprobs[len(c) - 1 + i, t].item() for i, t in enumerate(x))


@pytest.mark.parametrize("shots", [0, 2])
def test_each_rules_accuracy_is_recomputed_from_the_records_own_label_scores(tiny_lm, tmp_path, shots):
    task = get_task("trec")  # six labels of 6 to 13 bytes: the rules can disagree
    pool = load_rows(task, "test")
    result = run_fewshot(tiny_lm, task, shots, train_rows=pool[-100:], eval_rows=pool[:24])
    rec = read_record(write_run(result, "tiny", None, runs_dir=tmp_path))
    preds = read_predictions(rec.predictions)
    verbalizers = get_kind(task.kind).verbalizers(task)
    assert preds[0]["details"]["label_bytes"] == {lab: len(v.encode()) for lab, v in zip(task.labels, verbalizers)}
    gold = [p["references"][0] for p in preds]
    for rule, key in (("accuracy", "prediction"), ("accuracy_norm", "prediction_norm")):
        ranked = []
        for p in preds:
            lls, n_bytes = p["details"]["label_loglikelihoods"], p["details"]["label_bytes"]
            s = [lls[lab] if rule == "accuracy" else lls[lab] / n_bytes[lab] for lab in task.labels]
            ranked.append(task.labels[int(np.argmax(s))])
        assert ranked == [p[key] if key == "prediction" else p["details"][key] for p in preds]
        assert rec.metrics[rule] == pytest.approx(100 * np.mean([a == g for a, g in zip(ranked, gold)]))
        assert rec.metrics[rule] == pytest.approx(np.mean([p["scores"][rule] for p in preds]))
    sum_preds = [p["prediction"] for p in preds]
    assert rec.metrics["macro_f1"] == pytest.approx(
        compute_metrics(["macro_f1"], sum_preds, [[g] for g in gold], task.labels)["macro_f1"])
    # the raw sums are the model's log-likelihoods of the verbalizers (lm-eval's loglikelihood request)
    if shots == 0:
        ctx = build_prompt(task, tiny_lm, [], pool[0], get_kind(task.kind).answer_room(task, tiny_lm)).context
        for lab, v in zip(task.labels, verbalizers):
            assert preds[0]["details"]["label_loglikelihoods"][lab] == pytest.approx(
                naive_loglikelihood(tiny_lm, ctx, v), abs=1e-4)


# ---- the demos a prompt really held --------------------------------------------------------------------------


def test_a_record_keeps_the_k_asked_and_says_how_many_demos_were_used(tmp_path):
    task = get_task("sst2")
    train = [{"id": str(i), "text": "long demo " * 40, "label": i % 2} for i in range(8)]  # ~100 DummyLM tokens each
    rows = [{"id": "short", "text": "fine", "label": 1}, {"id": "mid", "text": "x" * 200, "label": 0},
            {"id": "long", "text": "y" * 400, "label": 0}]
    lm = DummyLM(max_length=150)  # one demo fits beside a short review, none beside a long one
    result = run_fewshot(lm, task, 4, train_rows=train, eval_rows=rows)
    used = [r["details"]["demos_used"] for r in result.rows]
    assert used == [1, 0, 0]
    rec = read_record(write_run(result, "dummy", None, runs_dir=tmp_path))
    assert rec.shots == 4 and rec.method == "few-shot"
    fs = rec.details["fewshot"]
    assert (fs["demos_used_min"], fs["demos_used_max"], fs["shots_used"]) == (0, 1, 0)
    assert fs["demos_used_mean"] == pytest.approx(1 / 3)


def test_the_leaderboard_label_shows_the_shots_used_when_they_differ_from_k():
    def members(*used):
        return [SimpleNamespace(record=SimpleNamespace(details={"fewshot": {"shots_used": u}})) for u in used]

    assert method_label({"method": "few-shot", "shots": _shots(4, members(0))}) == "few-shot (k=4, 0 used)"
    assert method_label({"method": "few-shot", "shots": _shots(200, members(19, 20))}) == \
        "few-shot (k=200, 19-20 used)"
    assert _shots(4, members(4, 4)) == 4  # all demos fit: the plain label
    assert _shots(0, members(0)) == 0
    assert _shots(4, [SimpleNamespace(record=SimpleNamespace(details={}))]) == 4  # an older record: nothing to say
