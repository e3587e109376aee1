"""Few-shot scoring speed: our path (length-sorted batches + the shared k-shot prefix run once, its KV cache
copied into every batch) vs a naive loop (one forward per (context, continuation) pair, no sharing, no batching).

Both score the same SST-2 validation prompts (k demos from the train split, both label verbalizers per
example) with the same model in one process, after a warm-up; the log-likelihoods must agree within 1e-4.
Prints examples/s of both and, last, `ratio=<ours/naive>`.

    python bench/fewshot.py                      # `mini` preset, random init, a BPE trained on Shakespeare
    python bench/fewshot.py --model results/backbones/default --examples 128 --shots 8
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402

from gpt2core.paths import DEFAULT_DATA_DIR, data_dir  # noqa: E402
from tasks.data.load import load_rows  # noqa: E402
from tasks.data.registry import get_task  # noqa: E402
from tasks.kinds import get_kind  # noqa: E402
from tasks.methods.fewshot import build_prompt, demo_text, sample_demos  # noqa: E402
from tasks.models.lm import GPT2LM  # noqa: E402


def random_mini(preset: str, vocab_size: int, seed: int) -> GPT2LM:
    from gpt2core import GPT2Config, GPT2LMModel, train_tokenizer

    folder = Path(tempfile.gettempdir()) / f"gpt2suite-bench-tok-{vocab_size}"
    if not (folder / "tokenizer.json").exists():
        train_tokenizer([(data_dir() or DEFAULT_DATA_DIR) / "corpus" / "tinyshakespeare" / "input.txt.gz"], vocab_size, folder,
                        show_progress=False)
    from gpt2core.tokenizer import load_tokenizer

    tok = load_tokenizer(folder)
    torch.manual_seed(seed)
    model = GPT2LMModel(GPT2Config.from_preset(preset, vocab_size=len(tok))).eval()
    return GPT2LM(model, tok)


@torch.inference_mode()
def naive_scores(lm: GPT2LM, requests: list[tuple[str, str]]) -> list[float]:
    out = []
    for ctx, cont in requests:
        c, x = lm.encode(ctx), lm.encode(cont)
        logprobs = torch.log_softmax(lm.model(torch.tensor([c + x[:-1]])).logits[0].float(), dim=-1)
        out.append(sum(logprobs[len(c) - 1 + i, t].item() for i, t in enumerate(x)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: a random-init --preset model)")
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--task", default="sst2", help="a classification task spec")
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    lm = GPT2LM.from_path(args.model) if args.model else random_mini(args.preset, args.vocab_size, args.seed)
    lm.batch_size = args.batch_size
    task = get_task(args.task)
    kind = get_kind(task.kind)
    demos = sample_demos(task, load_rows(task, task.train_split), args.shots, args.seed)
    demo_texts = [demo_text(task, d) for d in demos]
    rows = load_rows(task, task.eval_split)[: args.examples]
    conts = kind.verbalizers(task)
    reserve = kind.answer_room(task, lm)
    contexts = [build_prompt(task, lm, demo_texts, r, reserve).context for r in rows]
    requests = [(c, v) for c in contexts for v in conts]
    print(f"{args.examples} {task.name} examples x {len(conts)} labels, k={args.shots}, mean prompt "
          f"{sum(lm.token_count(c) for c in contexts) / len(contexts):.0f} tokens, batch {args.batch_size}, "
          f"{args.threads} threads, {sum(p.numel() for p in lm.model.parameters()) / 1e6:.2f}M parameters")

    lm.loglikelihood(requests[:8])  # warm-up
    naive_scores(lm, requests[:4])
    t0 = time.perf_counter()
    ours = [lp for lp, _ in lm.loglikelihood(requests)]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = naive_scores(lm, requests)
    t_naive = time.perf_counter() - t0

    diff = max(abs(a - b) for a, b in zip(ours, naive))
    print(f"max |ours - naive| log-likelihood: {diff:.2e}")
    if diff > 1e-4:
        raise SystemExit(f"scores differ by {diff:.2e} > 1e-4: the cached-prefix path is wrong")
    print(f"ours:  {args.examples / t_ours:.1f} examples/s ({t_ours:.2f}s)")
    print(f"naive: {args.examples / t_naive:.1f} examples/s ({t_naive:.2f}s)")
    print(f"ratio={t_naive / t_ours:.2f}")


if __name__ == "__main__":
    main()
