"""Few-shot prompting, the evaluation interface (GPT2LM, DummyLM) and the WikiText-2 row."""

import math
from collections import Counter

import pytest
import torch

from tasks.fewshot import build_prompt, render_answer, render_input, run_fewshot, sample_demos, write_run
from tasks.lm_eval import DummyLM, GPT2LM, rolling_windows
from tasks.records import read_predictions, read_record
from tasks.registry import TASKS, TaskError, get_task, load_split

_ROWS: dict[tuple[str, str], list] = {}


def rows(task: str, split: str) -> list:
    """Splits are loaded once per test session (the big train splits take seconds)."""
    if (task, split) not in _ROWS:
        _ROWS[(task, split)] = load_split(task, split).to_list()
    return _ROWS[(task, split)]


@pytest.fixture(scope="module")
def tiny_lm(tiny_backbone):
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


def test_too_many_shots_fail_clearly():
    task = get_task("sst2")
    train = [{"id": str(i), "text": f"t{i}", "label": i % 2} for i in range(5)]
    with pytest.raises(TaskError, match="has only 5 examples"):
        sample_demos(task, train, 6, 0)
    with pytest.raises(TaskError, match="label 'positive'"):
        sample_demos(task, [r for r in train if r["label"] == 0] + train[1:2], 4, 0)


# ---- fitting the window ----------------------------------------------------------------------------------


def test_long_prompts_drop_demos_then_truncate_the_document_then_fail():
    task = get_task("squad")
    row = {"id": "q", "question": "Who won?", "context": " ".join(f"word{i}" for i in range(200)),
           "answers": {"text": ["x"], "answer_start": [0]}}
    demos = [render_input(task, row) + render_answer(task, row)] * 3
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
    with pytest.raises(ValueError, match="n_positions=20"):
        build_prompt(task, lm, demos, row, 24)


def test_dropped_demos_are_reported_in_the_record(tmp_path, shared_data):
    task = get_task("squad")
    result = run_fewshot(DummyLM(max_length=400), task, 2, limit=4, train_rows=rows("squad", "validation")[-50:],
                         eval_rows=rows("squad", "validation")[:4], split="validation")
    assert result.info["demos_dropped_total"] == sum(r["demos_dropped"] for r in result.rows) > 0
    rec = read_record(write_run(result, "dummy", 4, runs_dir=tmp_path))
    assert rec["fewshot"]["examples_with_dropped_demos"] > 0
    assert "drop demos" in rec["config"]["truncation_rule"]


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
    demos = [render_input(task, d) + render_answer(task, d) for d in sample_demos(task, train, shots, 0)]
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
            assert ra["label_scores"][label] == pytest.approx(rb["label_scores"][label], abs=1e-4)


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
    probs = calibrated.info["content_free_label_probs"]
    assert probs["positive"] > 0.6 and sum(probs.values()) == pytest.approx(1.0)
    rec = read_record(write_run(calibrated, "dummy", None, runs_dir=tmp_path))
    assert rec["method"] == "few-shot-calibrated" and rec["config"]["content_free_inputs"] == ["N/A", "", "[MASK]"]
    with pytest.raises(TaskError, match="classification tasks only"):
        run_fewshot(biased, get_task("squad"), 0, calibrate=True, eval_rows=[])


# ---- every task end to end -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TASKS))
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
        assert rec["method"] == ("zero-shot" if shots == 0 else "few-shot") and rec["shots"] == shots
        assert rec["task"] == name and rec["n_examples"] == 3 and rec["seed"] == 0
        assert set(rec["metrics"]) == set(task.metrics)
        assert len(rec["config"]["demo_ids"]) == shots and rec["config"]["task_config_hash"]
        preds = read_predictions(rec["predictions"])
        assert [p["id"] for p in preds] == [r["id"] for r in evals]
        assert all(task.primary_metric in p["scores"] for p in preds)


def test_real_model_fewshot_on_squad_and_sst2(tiny_lm, tmp_path):
    for name, shots in (("sst2", 2), ("squad", 1)):
        task = get_task(name)
        pool = rows(name, "validation")
        result = run_fewshot(tiny_lm, task, shots, train_rows=pool[-100:], eval_rows=pool[:3], split="validation")
        rec = read_record(write_run(result, "tiny", 3, runs_dir=tmp_path))
        assert all(math.isfinite(v) for v in rec["metrics"].values())


def test_cli_unknown_task_and_dummy_run(tmp_path, capsys):
    from tasks.cli import main

    assert main(["fewshot", "--task", "sst3", "--model", "dummy"]) == 2
    assert "did you mean 'sst2'" in capsys.readouterr().err.lower()
    assert main(["fewshot", "--task", "trec", "--shots", "3", "--model", "dummy", "--limit", "5",
                 "--runs-dir", str(tmp_path)]) == 0
    assert "record:" in capsys.readouterr().out and list(tmp_path.glob("trec__few-shot-3shot__dummy*.json"))


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


def test_wikitext2_perplexity_is_finite_and_consistent_with_bits_per_byte(tiny_lm, tmp_path):
    from tasks.perplexity import evaluate_wikitext2, write_perplexity_run

    r = evaluate_wikitext2(tiny_lm, stride=128, max_len=256, max_chars=10_000)
    assert math.isfinite(r["token_perplexity"]) and r["token_perplexity"] > 1
    # A random 1,024-token model is close to uniform over its vocabulary.
    assert 100 < r["token_perplexity"] < 5000
    nll_nats = math.log(r["token_perplexity"]) * r["tokens"]
    assert r["bits_per_byte"] == pytest.approx(nll_nats / math.log(2) / r["bytes"], rel=1e-9)
    assert r["word_perplexity"] == pytest.approx(math.exp(nll_nats / r["words"]), rel=1e-9)
    rec = read_record(write_perplexity_run(r, "tiny", runs_dir=tmp_path))
    assert rec["task"] == "wikitext2" and rec["config"]["stride"] == 128
