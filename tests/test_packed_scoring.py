"""Packed scoring (tasks.models.packed_scoring): the continuations of one context scored as branches of one row
give the scores of one forward pass per (context, continuation) pair, whatever the batching."""

import pytest
import torch

from tasks.models.lm import GPT2LM
from tasks.models.packed_scoring import branch_mask, pack_rows


@pytest.fixture(scope="module")
def tiny_lm(tiny_backbone, one_thread):
    return GPT2LM.from_path(tiny_backbone, batch_size=4)


@torch.inference_mode()
def per_pair(lm: GPT2LM, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    """What lm-evaluation-harness computes: context + continuation[:-1] as its own row, every logit."""
    logprobs = torch.log_softmax(lm.model(torch.tensor([ctx + cont[:-1]])).logits[0].float(), dim=-1)
    at = logprobs[len(ctx) - 1:]
    target = torch.tensor(cont)
    return float(at.gather(-1, target[:, None]).sum()), bool((at.argmax(-1) == target).all())


def zero_shot_pairs(lm: GPT2LM) -> list[tuple[list[int], list[int]]]:
    """Contexts of different lengths, each with labels of 1 to 3 tokens; one context asked about alone."""
    contexts = ["Review: a gorgeous film\nSentiment:", "Review: dull\nSentiment:",
                "Review: the plot is thin but the actors shine brightly all the way\nSentiment:", "Question: who"]
    labels = [" negative", " positive", " quite mixed indeed"]
    pairs = [(lm.encode(c), lm.encode(v)) for c in contexts[:3] for v in labels]
    return pairs + [(lm.encode(contexts[3]), lm.encode(" is it"))]


def test_packed_scores_equal_one_forward_per_pair_within_1e5(tiny_lm):
    pairs = zero_shot_pairs(tiny_lm)
    assert len({len(c) for _, c in pairs}) > 1  # multi-token continuations of different lengths
    for (ctx, cont), (lp, greedy) in zip(pairs, tiny_lm.score_tokens(pairs)):
        ref_lp, ref_greedy = per_pair(tiny_lm, ctx, cont)
        assert lp == pytest.approx(ref_lp, abs=1e-5) and greedy == ref_greedy


def test_a_greedy_continuation_is_flagged_greedy_in_its_branch(tiny_lm):
    ctx = tiny_lm.encode("ROMEO: what light through yonder window")
    with torch.inference_mode():
        ids = tiny_lm.model.generate(torch.tensor([ctx]), max_new_tokens=3, eos_token_id=[])[0, len(ctx):].tolist()
    (_, greedy), (_, other) = tiny_lm.score_tokens([(ctx, ids), (ctx, ids[:2] + [(ids[2] + 1) % 1000])])
    assert greedy and not other


@pytest.mark.parametrize("batch_size", [1, 2, 7])
def test_scores_do_not_depend_on_batch_size(tiny_lm, batch_size):
    pairs = zero_shot_pairs(tiny_lm)
    tiny_lm.batch_size = 4
    reference = tiny_lm.score_tokens(pairs)
    tiny_lm.batch_size = batch_size
    try:
        for (lp, greedy), (ref_lp, ref_greedy) in zip(tiny_lm.score_tokens(pairs), reference):
            assert lp == pytest.approx(ref_lp, abs=1e-5) and greedy == ref_greedy
    finally:
        tiny_lm.batch_size = 4


def test_a_shared_prefix_and_packed_branches_together(tiny_lm):
    """k-shot: the demos are the cached prefix, each example's labels the branches of its row."""
    demos = "Review: a joy to watch\nSentiment: positive\n\nReview: it never works\nSentiment: negative\n\n"
    pairs = [(tiny_lm.encode(demos + f"Review: {t}\nSentiment:"), tiny_lm.encode(v))
             for t in ("fine", "a long , tedious exercise") for v in (" negative", " positive")]
    for (ctx, cont), (lp, _) in zip(pairs, tiny_lm.score_tokens(pairs)):
        assert lp == pytest.approx(per_pair(tiny_lm, ctx, cont)[0], abs=1e-5)


def test_each_context_is_one_row_unless_its_branches_overflow_the_window():
    pairs = [([1, 2, 3], [4, 5]), ([1, 2, 3], [6, 7, 8]), ([9], [4]), ([1, 2, 3], [5])]
    rows = pack_rows(pairs, prefix_len=0, max_len=512)
    assert [r.tokens for r in rows] == [[1, 2, 3, 4, 6, 7], [9]]
    assert rows[0].positions == [0, 1, 2, 3, 3, 4] and rows[0].segments == [0, 0, 0, 1, 2, 2]
    assert [(i, where) for i, where, _ in rows[0].targets] == [(0, [2, 3]), (1, [2, 4, 5]), (3, [2])]
    split = pack_rows(pairs, prefix_len=0, max_len=5)  # 3 + 1 + 2 tokens do not fit in 5
    assert [r.tokens for r in split] == [[1, 2, 3, 4], [1, 2, 3, 6, 7], [9]]


def test_a_branch_sees_the_prefix_its_context_and_itself_only():
    seg = torch.tensor([[0, 0, 1, 2, 2, -1]])
    mask = branch_mask(seg, prefix_len=2)[0, 0].int()
    assert mask.shape == (6, 8) and bool(mask[:, :2].all())  # every query sees the shared prefix
    assert mask[:, 2:].tolist() == [[1, 0, 0, 0, 0, 0],
                                    [1, 1, 0, 0, 0, 0],
                                    [1, 1, 1, 0, 0, 0],
                                    [1, 1, 0, 1, 0, 0],
                                    [1, 1, 0, 1, 1, 0],
                                    [0, 0, 0, 0, 0, 1]]  # padding sees only itself
