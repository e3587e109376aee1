"""Training throughput: our step (gpt2core model + the pretraining loop's loss and AdamW) vs transformers'
`GPT2LMHeadModel` (attn_implementation="sdpa") with the same config, batch, sequence length, dtype and threads.
Our loss is the LM head fused with the cross-entropy (gpt2core.fused_loss; under --compile model the compiler's own
fusion of the plain loss).

    .venv/bin/python bench/train_throughput.py [--preset mini] [--dtype fp32|bf16] [--batch 8] [--seq-len 256]

Both models start from the same weights. After warm-up the two steps run in alternating rounds (so background
load hits both alike) and the median tokens/s of each is reported;
the ratio is the median of the per-round ratios. The last line is exactly `ratio=<ours/reference>`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mini")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="steps per round")
    ap.add_argument("--same-optimizer", action="store_true",
                    help="give the reference our optimizer settings too (fused CPU AdamW)")
    ap.add_argument("--compile", choices=["none", "model", "blocks"], default="none",
                    help="torch.compile our whole model, or each transformer block only (the fused LM head + loss "
                         "stays eager); costs compile time, reported")
    args = ap.parse_args()

    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    from gpt2core.config import GPT2Config
    from gpt2core.model import GPT2LMModel
    from gpt2core.pretrain.config import PretrainConfig
    from gpt2core.pretrain.optim import make_optimizer

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    cfg = GPT2Config.from_preset(args.preset)
    ours = GPT2LMModel(cfg).train()
    ref = GPT2LMHeadModel(HFConfig(vocab_size=cfg.vocab_size, n_positions=cfg.n_positions, n_embd=cfg.n_embd,
                                   n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                                   attn_pdrop=0.0, attn_implementation="sdpa")).train()
    ref.load_state_dict(ours.to_hf().state_dict())

    pcfg = PretrainConfig(lr=1e-4)
    opt_ours = make_optimizer(ours, pcfg, "cpu")
    ref_kwargs = {"fused": True} if args.same_optimizer else {}
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, **ref_kwargs)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if args.dtype == "bf16" else contextlib.nullcontext()
    fwd = torch.compile(ours) if args.compile == "model" else ours
    if args.compile == "blocks":
        for block in ours.transformer.h:
            block.compile()

    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, cfg.vocab_size, (args.batch, args.seq_len + 1), generator=g)
    x, y = data[:, :-1], data[:, 1:]

    def step_ours() -> float:
        with autocast:
            loss = fwd(input_ids=x, targets=y).loss  # as the pretraining loop: the LM head fused with the loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ours.parameters(), 1.0)
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)
        return float(loss.detach())

    def step_ref() -> float:
        with autocast:
            # transformers' own loss: labels = inputs, shifted inside (same targets, one position fewer)
            loss = ref(input_ids=data, labels=data).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        opt_ref.step()
        opt_ref.zero_grad(set_to_none=True)
        return float(loss.detach())

    tokens = args.batch * args.seq_len
    t0 = time.perf_counter()
    step_ours()  # with --compile: the compile
    first_step = time.perf_counter() - t0
    for _ in range(args.warmup):
        step_ours()
        step_ref()
    rates: dict[str, list[float]] = {"ours": [], "reference": []}
    for _ in range(args.rounds):
        for name, fn in (("ours", step_ours), ("reference", step_ref)):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            rates[name].append(args.steps * tokens / (time.perf_counter() - t0))
    a, b = statistics.median(rates["ours"]), statistics.median(rates["reference"])
    n = sum(p.numel() for p in ours.parameters())
    print(f"preset={args.preset} ({n / 1e6:.1f}M params) dtype={args.dtype} batch={args.batch}x{args.seq_len} "
          f"threads={args.threads} rounds={args.rounds}x{args.steps} steps compile={args.compile}")
    print(f"our first step {first_step:.1f} s (compile included)")
    print(f"ours:      {a:8.0f} tok/s  (rounds: {', '.join(f'{r:.0f}' for r in rates['ours'])})")
    print(f"reference: {b:8.0f} tok/s  (GPT2LMHeadModel sdpa; rounds: "
          f"{', '.join(f'{r:.0f}' for r in rates['reference'])})")
    # Each round times ours then the reference back to back; the median of per-round ratios resists load drift.
    paired = statistics.median(o / r for o, r in zip(rates["ours"], rates["reference"]))
    print(f"median tok/s ratio {a / b:.3f}; median per-round ratio {paired:.3f}")
    print(f"ratio={paired:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
