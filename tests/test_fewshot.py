"""Few-shot prompting (tasks.methods.fewshot), the evaluation interface (GPT2LM, DummyLM), the perplexity row
(tasks.methods.perplexity) and their command line."""

import dataclasses
import math
from collections import Counter

import pytest
import torch

from tasks.data.load import load_rows
from tasks.data.registry import available_tasks, get_task, spec_fields
from tasks.errors import DataError, MethodError, TaskError
from tasks.evaluation.records import config_hash, read_predictions, read_record
from tasks.kinds import get_kind
from tasks.methods.fewshot import build_prompt, demo_text, run_fewshot, sample_demos, write_run
from tasks.methods.perplexity import default_text_task, evaluate_perplexity, write_perplexity_run
from tasks.models.lm import DummyLM, GPT2LM, rolling_windows

_ROWS: dict[tuple[str, str], list] = {}


def rows(task: str, split: str) -> list:
    """Splits are loaded once per test session (the big train splits take seconds)."""
    if (task, split) not in _ROWS:
        _ROWS[(task, split)] = load_rows(task, split)
    return _ROWS[(task, split)]


def tasks_where(test) -> list[str]:
    return [n for n in available_tasks() if test(get_kind(get_task(n).kind))]


PROMPTED = tasks_where(lambda kind: kind.prompting)


@pytest.fixture(scope="module")
def tiny_lm(tiny_backbone, one_thread):
    return GPT2LM.from_path(tiny_backbone, batch_size=8)


# ---- the demo sampler ------------------------------------------------------------------------------------


def test_sampler_is_seeded_class_balanced_and_draws_from_train_only(shared_data):
    task = get_task("trec")
    train, test = rows("trec", "train"), rows("trec", "test")
    a, b, c = (sample_demos(task, train, 12, seed) for seed in (0, 0, 1))
    assert [d["text"] for d in a] == [d["text"] for d in b]
    assert [d["text"] for d in a] != [d["text"] for d in c]
    assert Counter(d["label"] for d in a) == {c: 2 for c in range(6)}
    counts = Counter(d["label"] for d in sample_demos(task, train, 8, 3)).values()
    assert max(counts) - min(counts) <= 1 and sum(counts) == 8
    assert [d["label"] for d in a] != sorted(d["label"] for d in a)  # shuffled, not in label blocks
    train_texts, test_texts = {r["text"] for r in train}, {r["text"] for r in test}
    for seed in range(5):
        for d in sample_demos(task, train, 6, seed):
            assert d["text"] in train_texts and d["text"] not in test_texts
    with pytest.raises(TaskError, match="cannot also be the evaluated split"):
        run_fewshot(DummyLM(), task, 2, split="train", train_rows=train, eval_rows=train[:2])


def test_the_sampler_rng_is_seeded_by_task_name_and_seed():
    import random

    spec = get_task("squad")  # a kind without demo strata: k distinct rows, uniformly
    pool = [{"id": str(i), "question": "q", "context": f"c{i}", "answers": {"text": ["a"], "answer_start": [0]}}
            for i in range(50)]
    expected = random.Random(f"{spec.name}:7").sample(range(50), 4)
    assert [d["id"] for d in sample_demos(spec, pool, 4, 7)] == [str(i) for i in expected]


def test_too_many_shots_fail_clearly():
    task = get_task("sst2")
    train = [{"id": str(i), "text": f"t{i}", "label": i % 2} for i in range(5)]
    with pytest.raises(TaskError, match="has only 5 examples"):
        sample_demos(task, train, 6, 0)
    with pytest.raises(TaskError, match="label 'positive'"):
        sample_demos(task, [r for r in train if r["label"] == 0] + train[1:2], 4, 0)
    with pytest.raises(MethodError, match="shots must be >= 0"):
        run_fewshot(DummyLM(), task, -1, train_rows=train, eval_rows=train)
    with pytest.raises(MethodError, match="limit must be >= 1"):
        run_fewshot(DummyLM(), task, 0, limit=0, eval_rows=train)
    with pytest.raises(DataError, match="nothing to evaluate"):
        run_fewshot(DummyLM(), task, 0, eval_rows=[])


def test_prompting_applies_to_prompted_kinds_only():
    text_task = default_text_task()
    with pytest.raises(MethodError, match="does not apply"):
        run_fewshot(DummyLM(), text_task, 0, eval_rows=[{"id": "x"}])


# ---- fitting the window ----------------------------------------------------------------------------------


def test_long_prompts_drop_demos_then_truncate_the_document_then_fail():
    task = get_task("squad")
    row = {"id": "q", "question": "Who won?", "context": " ".join(f"word{i}" for i in range(200)),
           "answers": {"text": ["x"], "answer_start": [0]}}
    demos = [demo_text(task, row)] * 3
    lm = DummyLM(max_length=4096)
    assert build_prompt(task, lm, demos, row, 24).demos_dropped == 0
    lm.max_length = 2 * lm.token_count(demos[0]) + 24 + 30
    p = build_prompt(task, lm, demos, row, 24)
    assert (p.demos_used, p.demos_dropped, p.words_truncated) == (1, 2, 0)
    assert p.context.startswith(demos[0]) and lm.token_count(p.context) + 24 <= lm.max_length
    lm.max_length = 150
    p = build_prompt(task, lm, demos, row, 24)
    assert p.demos_dropped == 3 and 0 < p.words_truncated < 200
    assert lm.token_count(p.context) + 24 <= 150 and p.context.endswith("Q: Who won?\nA:")
    lm.max_length = 20
    with pytest.raises(MethodError, match="n_positions=20"):
        build_prompt(task, lm, demos, row, 24)


def test_an_instruction_goes_before_the_demos():
    spec = get_task("sst2")
    spec = dataclasses.replace(spec, prompt=dataclasses.replace(spec.prompt, instruction="Rate the review."))
    p = build_prompt(spec, DummyLM(), ["Review: a\nSentiment: positive"], {"id": "1", "text": "b"}, 2)
    assert p.context == "Rate the review.\n\nReview: a\nSentiment: positive\n\nReview: b\nSentiment:"


def test_dropped_demos_are_reported_in_the_record(tmp_path, shared_data):
    task = get_task("squad")
    result = run_fewshot(DummyLM(max_length=400), task, 2, limit=4, train_rows=rows("squad", "validation")[-50:],
                         eval_rows=rows("squad", "validation")[:4], split="validation")
    assert result.info["demos_dropped_total"] == sum(r["details"]["demos_dropped"] for r in result.rows) > 0
    rec = read_record(write_run(result, "dummy", 4, runs_dir=tmp_path))
    assert rec.details["fewshot"]["examples_with_dropped_demos"] > 0
    assert "drop demos" in rec.config["truncation_rule"]
    preds = read_predictions(rec.predictions)
    assert [p["details"]["demos_dropped"] for p in preds] == [r["details"]["demos_dropped"] for r in result.rows]


# ---- the real model: caching, batching ---------------------------------------------------------------------


@torch.inference_mode()
def naive_loglikelihood(lm: GPT2LM, ctx: str, cont: str) -> float:
    c, x = lm.encode(ctx), lm.encode(cont)
    logprobs = torch.log_softmax(lm.model(torch.tensor([c + x[:-1]])).logits[0].float(), dim=-1)
    return sum(logprobs[len(c) - 1 + i, t].item() for i, t in enumerate(x))


def sst2_requests(lm, n=6, shots=4):
    task = get_task("sst2")
    train = [{"id": str(i), "text": t, "label": i % 2}
             for i, t in enumerate(["a gorgeous film", "dull and slow", "a joy to watch", "it never works"])]
    demos = [demo_text(task, d) for d in sample_demos(task, train, shots, 0)]
    texts = ["an utterly charming movie", "bad", "the plot is thin but the actors shine brightly",
             "i hated every minute of it", "fine", "a long , tedious exercise in style over substance"][:n]
    ctxs = [build_prompt(task, lm, demos, {"text": t}, 2).context for t in texts]
    return [(c, v) for c in ctxs for v in (" negative", " positive")]


def test_cached_prefix_path_equals_naive_per_pair_forward(tiny_lm, monkeypatch):
    requests = sst2_requests(tiny_lm)
    used = []
    original = tiny_lm._prefix_cache
    monkeypatch.setattr(tiny_lm, "_prefix_cache", lambda prefix: used.append(len(prefix)) or original(prefix))
    ours = tiny_lm.loglikelihood(requests)
    assert used and used[0] >= 20  # the demos really were run once as a shared prefix
    for (ctx, cont), (lp, _) in zip(requests, ours):
        assert lp == pytest.approx(naive_loglikelihood(tiny_lm, ctx, cont), abs=1e-4)


def test_is_greedy_matches_argmax(tiny_lm):
    ctx = "ROMEO: what light through yonder window"
    ids = tiny_lm.encode(ctx)
    with torch.inference_mode():
        nxt = int(tiny_lm.model(torch.tensor([ids])).logits[0, -1].argmax())
    greedy_cont = tiny_lm.tokenizer.decode([nxt])
    [(_, is_greedy)] = tiny_lm.score_tokens([(ids, [nxt])])
    [(_, not_greedy)] = tiny_lm.score_tokens([(ids, [(nxt + 1) % 1000])])
    assert is_greedy and not not_greedy and greedy_cont


def test_scores_and_predictions_do_not_depend_on_batch_size(tiny_lm):
    task = get_task("sst2")
    pool = rows("sst2", "validation")
    train, val = pool[-200:], pool[:10]
    results = {}
    for bs in (1, 8):
        tiny_lm.batch_size = bs
        results[bs] = run_fewshot(tiny_lm, task, 4, seed=1, train_rows=train, eval_rows=val)
    tiny_lm.batch_size = 8
    a, b = results[1].rows, results[8].rows
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b]
    for ra, rb in zip(a, b):
        for label in task.label_names:
            assert ra["details"]["label_loglikelihoods"][label] == pytest.approx(
                rb["details"]["label_loglikelihoods"][label], abs=1e-4)


def test_generate_until_matches_gpt2core_greedy_and_batch_size(tiny_lm):
    demos = "English: a dog runs = German: ein Hund rennt\n\nEnglish: two men = German: zwei Manner\n\n"
    reqs = [(demos + f"English: {s} = German:", {"until": ["\n"], "max_gen_toks": 12})
            for s in ["a cat", "the old woman reads a book", "children play", "x"]]
    tiny_lm.batch_size = 1
    out1 = tiny_lm.generate_until(reqs)
    tiny_lm.batch_size = 8
    out8 = tiny_lm.generate_until(reqs)
    assert out1 == out8
    for (ctx, _), got in zip(reqs, out8):
        ids = torch.tensor([tiny_lm.encode(ctx)])
        full = tiny_lm.model.generate(ids, max_new_tokens=12)
        ref = tiny_lm.tokenizer.decode(full[0, ids.shape[1]:].tolist()).split("\n")[0]
        assert got == ref


# ---- calibration -----------------------------------------------------------------------------------------


def test_contextual_calibration_removes_a_label_bias(tmp_path):
    task = get_task("sst2")
    train = [{"id": str(i), "text": f"demo {i}", "label": i % 2} for i in range(8)]
    evals = [{"id": str(i), "text": f"review number {i}", "label": i % 2} for i in range(40)]
    biased = DummyLM(bias={"positive": 3.0})
    plain = run_fewshot(biased, task, 2, train_rows=train, eval_rows=evals)
    calibrated = run_fewshot(biased, task, 2, calibrate=True, train_rows=train, eval_rows=evals)
    assert {r["prediction"] for r in plain.rows} == {"positive"}
    assert Counter(r["prediction"] for r in calibrated.rows)["negative"] > 5
    probs = calibrated.info["content_free_label_probs"]  # per rule
    assert set(probs) == {"accuracy", "accuracy_norm"}
    assert all(p["positive"] > 0.55 and sum(p.values()) == pytest.approx(1.0) for p in probs.values())
    assert probs["accuracy"]["positive"] > 0.9  # the bias is 3 nats on the sum, 3/9 per byte of " positive"
    rec = read_record(write_run(calibrated, "dummy", None, runs_dir=tmp_path))
    assert rec.method == "few-shot-calibrated" and rec.config["content_free_inputs"] == ["N/A", "", "[MASK]"]
    for rule, p in probs.items():
        assert rec.details["fewshot"]["content_free_label_probs"][rule] == pytest.approx(p)
    squad_row = {"id": "1", "question": "q", "context": "c", "answers": {"text": ["c"], "answer_start": [0]}}
    with pytest.raises(MethodError, match="classification tasks only"):
        run_fewshot(biased, get_task("squad"), 0, calibrate=True, eval_rows=[squad_row])


# ---- every prompted task end to end ------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROMPTED)
def test_fewshot_run_of_every_task_writes_a_valid_record(name, tmp_path, shared_data):
    task = get_task(name)
    # Demos only need a pool here (where they come from is tested above); the eval split's tail keeps the
    # test fast (squad's train split alone takes seconds to load), disjoint from the 3 evaluated examples.
    pool = rows(name, task.eval_split)
    train, evals = pool[-300:], pool[:3]
    lm = DummyLM()
    for shots in (0, 2):
        result = run_fewshot(lm, task, shots, seed=0, train_rows=train, eval_rows=evals)
        path = write_run(result, "dummy", 3, runs_dir=tmp_path)
        rec = read_record(path)
        assert rec.method == ("zero-shot" if shots == 0 else "few-shot") and rec.shots == shots
        assert rec.task == name and rec.n_examples == 3 and rec.seed == 0 and rec.trainable_params == 0
        # ranked labels: both rules' accuracies (sum = lm-eval acc, per byte = acc_norm) beside the spec's metrics
        assert set(rec.metrics) == set(task.metrics) | ({"accuracy", "accuracy_norm"} if task.labels else set())
        assert rec.config["task_config_hash"] == rec.task_hash == config_hash(spec_fields(task))
        assert len(rec.config["demo_ids"]) == shots
        assert rec.config["scoring"] == get_kind(task.kind).prompt_scoring(task)
        preds = read_predictions(rec.predictions)
        assert [p["id"] for p in preds] == [r["id"] for r in evals]
        assert all(task.primary_metric in p["scores"] for p in preds)
        assert all(p["details"]["demos_used"] + p["details"]["demos_dropped"] == shots for p in preds)
        assert all(("label_loglikelihoods" in p["details"]) == bool(task.labels) for p in preds)
        assert all({"accuracy", "accuracy_norm"} <= set(p["scores"]) for p in preds if task.labels)
        used = Counter(p["details"]["demos_used"] for p in preds)
        fs = rec.details["fewshot"]
        assert (fs["demos_used_min"], fs["demos_used_max"]) == (min(used), max(used))
        assert used[fs["shots_used"]] == max(used.values())  # the most common count; `shots` stays the k asked


def test_the_spec_hash_changes_the_record_name(tmp_path):
    spec = get_task("sst2")
    evals = [{"id": "1", "text": "fine", "label": 1}]
    a = write_run(run_fewshot(DummyLM(), spec, 0, eval_rows=evals), "dummy", None, runs_dir=tmp_path)
    other = dataclasses.replace(spec, prompt=dataclasses.replace(spec.prompt, input="Text: {text}\nSentiment:"))
    b = write_run(run_fewshot(DummyLM(), other, 0, eval_rows=evals), "dummy", None, runs_dir=tmp_path)
    assert a.name != b.name and read_record(a).task_hash != read_record(b).task_hash


def test_real_model_fewshot_on_squad_and_sst2(tiny_lm, tmp_path):
    for name, shots in (("sst2", 2), ("squad", 1)):
        task = get_task(name)
        pool = rows(name, "validation")
        result = run_fewshot(tiny_lm, task, shots, train_rows=pool[-100:], eval_rows=pool[:3], split="validation")
        rec = read_record(write_run(result, "tiny", 3, runs_dir=tmp_path))
        assert all(math.isfinite(v) for v in rec.metrics.values())


def test_cli_unknown_task_and_dummy_run(tmp_path, capsys, shared_data):
    from tasks.cli.main import main

    assert main(["fewshot", "--task", "sst3", "--model", "dummy"]) == 2
    assert "did you mean 'sst2'" in capsys.readouterr().err.lower()
    assert main(["fewshot", "--task", "trec", "--shots", "3", "--model", "dummy", "--limit", "5",
                 "--runs-dir", str(tmp_path)]) == 0
    assert "record:" in capsys.readouterr().out and list(tmp_path.glob("trec__few-shot-3shot__dummy*.json"))
    # Bad input is one line and exit status 2, never a traceback.
    assert main(["fewshot", "--task", "squad", "--calibrate", "--model", "dummy"]) == 2
    assert "classification tasks only" in capsys.readouterr().err
    assert main(["fewshot", "--task", "trec", "--shots", "-1", "--model", "dummy", "--limit", "2"]) == 2
    assert main(["fewshot", "--task", "trec", "--model", "dummy", "--batch-size", "0"]) == 2
    assert main(["baseline", "--task", "squad", "--method", "majority"]) == 2
    assert "best-sentence" in capsys.readouterr().err
    assert main(["baseline", "--task", "scitldr", "--limit", "5", "--runs-dir", str(tmp_path)]) == 0
    assert list(tmp_path.glob("scitldr__baseline-lead-k__none__*.json"))
    assert main(["perplexity", "--task", "sst2", "--model", "dummy"]) == 2
    assert "whole documents" in capsys.readouterr().err


# ---- perplexity ------------------------------------------------------------------------------------------


def test_rolling_windows_predict_every_token_once():
    for n, max_len, stride in [(1, 4, 4), (10, 4, 4), (10, 4, 1), (23, 8, 3)]:
        windows = rolling_windows(n, max_len, stride)
        targets = [t for _, first, end in windows for t in range(first, end)]
        assert targets == list(range(1, n + 1))
        assert all(end - 1 - start <= max_len and start < first for start, first, end in windows)


def test_rolling_loglikelihood_equals_one_forward_when_it_fits(tiny_lm):
    text = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer"
    ids = [tiny_lm.eot] + tiny_lm.encode(text)
    with torch.inference_mode():
        logprobs = torch.log_softmax(tiny_lm.model(torch.tensor([ids[:-1]])).logits[0].float(), -1)
    full = sum(logprobs[i, t].item() for i, t in enumerate(ids[1:]))
    [rolled] = tiny_lm.loglikelihood_rolling([text], max_len=64, stride=64)
    assert rolled == pytest.approx(full, abs=1e-3)
    # Overlapping windows give every token more context: a different (here: finite) total.
    [strided] = tiny_lm.loglikelihood_rolling([text], max_len=8, stride=4)
    assert math.isfinite(strided) and strided != pytest.approx(full, abs=1e-3)


def test_the_default_text_task_is_the_first_spec_that_scores_text():
    assert default_text_task().name == tasks_where(lambda kind: kind.scores_text)[0]


def test_perplexity_is_finite_and_consistent_with_bits_per_byte(tiny_lm, tmp_path, shared_data):
    spec = default_text_task()
    r = evaluate_perplexity(tiny_lm, spec, stride=128, max_len=256, max_chars=10_000)
    s = r.scores
    assert r.split == spec.eval_split and set(r.metrics) == set(spec.metrics)
    assert math.isfinite(s["token_perplexity"]) and s["token_perplexity"] > 1
    # A random 1,024-token model is close to uniform over its vocabulary.
    assert 100 < s["token_perplexity"] < 5000
    nll_nats = math.log(s["token_perplexity"]) * s["tokens"]
    assert s["bits_per_byte"] == pytest.approx(nll_nats / math.log(2) / s["bytes"], rel=1e-9)
    assert s["word_perplexity"] == pytest.approx(math.exp(nll_nats / s["words"]), rel=1e-9)
    rec = read_record(write_perplexity_run(r, "tiny", runs_dir=tmp_path))
    assert rec.task == spec.name and rec.task_hash == config_hash(spec_fields(spec))
    assert rec.config["stride"] == 128 and rec.config["chars"] == 10_000 and rec.n_examples == 1
    assert rec.details["counts"]["tokens"] == rec.tokens_seen == s["tokens"] and rec.predictions is None


def test_perplexity_bad_input_is_a_suite_error(shared_data):
    lm = DummyLM(max_length=64)
    with pytest.raises(MethodError, match="stride"):
        evaluate_perplexity(lm, max_len=32, stride=33)
    with pytest.raises(MethodError, match="n_positions"):
        evaluate_perplexity(lm, max_len=65)
    with pytest.raises(TaskError, match="split"):
        evaluate_perplexity(lm, split="nope", max_chars=100)
    with pytest.raises(MethodError, match="whole documents"):
        evaluate_perplexity(lm, get_task("sst2"))
    assert evaluate_perplexity(lm, max_chars=500).scores["chars"] == 500


def test_perplexity_cli_defaults_to_the_text_task(tmp_path, capsys, shared_data):
    from tasks.cli.main import main

    assert main(["perplexity", "--model", "dummy", "--max-chars", "2000", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    name = default_text_task().name
    assert out.startswith(f"{name} ") and list(tmp_path.glob(f"{name}__perplexity__dummy__*.json"))
