"""Greedy generation speed: gpt2core's KV-cache loop vs transformers' `GPT2LMHeadModel.generate`.

Both sides hold identical weights (ours exported with `to_hf()`), run with the same threads and inputs, after
a warm-up, in one process. Prints tokens/s of both and, last, `ratio=<ours/reference>`.

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


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


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
        run_ours(), run_ref()  # warm-up
        t_ref, out_ref = timed(run_ref, args.repeats)
        t_ours, out_ours = timed(run_ours, args.repeats)
    new = args.batch * args.new_tokens
    same = torch.equal(out_ref, out_ours)
    print(f"preset={args.preset} params={ours.num_parameters() / 1e6:.1f}M batch={args.batch} "
          f"prompt={args.prompt_len} new_tokens={args.new_tokens} threads={args.threads} repeats={args.repeats}")
    print(f"transformers generate: {new / t_ref:9.1f} tokens/s ({t_ref * 1000:.0f} ms)")
    print(f"gpt2core generate:     {new / t_ours:9.1f} tokens/s ({t_ours * 1000:.0f} ms)")
    print(f"identical tokens: {same}")
    print(f"ratio={t_ref / t_ours:.2f}")


if __name__ == "__main__":
    main()
