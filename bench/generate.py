"""Greedy generation speed: gpt2core's KV-cache loop vs transformers' `GPT2LMHeadModel.generate`.

Both sides hold identical weights (ours exported with `to_hf()`), run with the same threads and inputs, after
a warm-up, in one process, in alternating rounds (so a load that comes and goes hits both alike). Prints tokens/s
of both, the weight bandwidth our loop achieves at batch 1 against the weight-read limit measured in the same
run (one large matrix-vector product over as many bytes as a decoding step reads), and, last,
`ratio=<ours/reference>`, the median of the per-round ratios.

    python bench/generate.py                 # batch 1, 32-token prompt, 128 new tokens, `mini` preset
    python bench/generate.py --batch 8       # 8 prompts of different lengths, left-padded
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from gpt2core import GPT2Config, GPT2LMModel  # noqa: E402


def make_inputs(batch: int, prompt_len: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab - 1, (batch, prompt_len), generator=g)
    mask = torch.ones_like(ids)
    for row in range(batch):  # rows of different lengths: row i has i * 3 fewer prompt tokens
        pad = min(row * 3, prompt_len - 1)
        mask[row, :pad] = 0
        ids[row, :pad] = vocab - 1
    return ids, mask


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def weight_bytes(model: GPT2LMModel) -> int:
    """Bytes of weights one decoding step reads: every parameter except the embedding rows it does not look up
    (the tied LM head is read once, as the head)."""
    embeddings = {model.transformer.wte.weight.data_ptr(), model.transformer.wpe.weight.data_ptr()}
    body = sum(p.numel() * p.element_size() for p in model.parameters() if p.data_ptr() not in embeddings)
    head = model.lm_head.weight
    return body + head.numel() * head.element_size()


def gemv_floor(model: GPT2LMModel, repeats: int) -> float:
    """Seconds of a decoding step's matrix-vector products alone (its weight matrices, in its order, one row):
    what the step would cost with every other op free."""
    from gpt2core.generation import DecodeStep

    step = DecodeStep(model)
    mats = [in_out for layer in step.layers for in_out, _, _ in layer[2:]] + [step.head[0]]
    xs = [torch.randn(1, w.shape[0]) for w in mats]

    def products() -> None:
        for x, w in zip(xs, mats):
            x @ w

    products()
    return statistics.median(seconds(products) for _ in range(20 * repeats))


def read_limit(n_bytes: int, repeats: int) -> float:
    """Bytes/s of one matrix-vector product over an (n, 1024) fp32 matrix of about `n_bytes`: the rate at which
    this machine streams weights through a GEMV, the bound of batch-1 decoding."""
    w = torch.randn(max(1, n_bytes // 4096), 1024)
    x = torch.randn(1, w.shape[0])
    x @ w
    return w.numel() * 4 / statistics.median(seconds(lambda: x @ w) for _ in range(20 * repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ours = GPT2LMModel(GPT2Config.from_preset(args.preset)).eval()
    ref = ours.to_hf().eval()
    ids, mask = make_inputs(args.batch, args.prompt_len, ours.config.vocab_size, args.seed)
    eos = ours.config.eos_token_id

    def run_ours():
        return ours.generate(ids, attention_mask=mask, max_new_tokens=args.new_tokens, eos_token_id=[])

    def run_ref():
        # min_new_tokens keeps HF from stopping at EOS, like eos_token_id=[] on our side.
        return ref.generate(ids, attention_mask=mask, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                            do_sample=False, pad_token_id=eos)

    with torch.inference_mode():
        out_ours, out_ref = run_ours(), run_ref()  # warm-up
        rounds = [(seconds(run_ref), seconds(run_ours)) for _ in range(args.repeats)]
        if args.batch == 1:
            limit, floor = read_limit(weight_bytes(ours), args.repeats), gemv_floor(ours, args.repeats)
    t_ref, t_ours = (statistics.median(r[i] for r in rounds) for i in (0, 1))
    new = args.batch * args.new_tokens
    print(f"preset={args.preset} params={ours.num_parameters() / 1e6:.1f}M batch={args.batch} "
          f"prompt={args.prompt_len} new_tokens={args.new_tokens} threads={args.threads} rounds={args.repeats}")
    print(f"transformers generate: {new / t_ref:9.1f} tokens/s ({t_ref * 1000:.0f} ms)")
    print(f"gpt2core generate:     {new / t_ours:9.1f} tokens/s ({t_ours * 1000:.0f} ms)")
    if args.batch == 1:  # the weight-read bound is the batch-1 story; at batch 8 the GEMMs are compute-bound
        # Every step reads every weight once; the prompt step is a small share of 128 steps.
        achieved = weight_bytes(ours) * args.new_tokens / t_ours
        print(f"weights read: {weight_bytes(ours) / 1e6:.1f} MB a step; gpt2core {achieved / 1e9:.1f} GB/s = "
              f"{achieved / limit:.0%} of the {limit / 1e9:.1f} GB/s one large GEMV reads here "
              f"(limit {limit / weight_bytes(ours):.0f} steps/s)")
        print(f"a step's matrix-vector products alone: {floor * 1000:.2f} ms; our step "
              f"{t_ours / args.new_tokens * 1000:.2f} ms, transformers' {t_ref / args.new_tokens * 1000:.2f} ms")
    print(f"identical tokens: {torch.equal(out_ref, out_ours)}")
    print(f"ratio={statistics.median(r / o for r, o in rounds):.2f}")


if __name__ == "__main__":
    main()
