"""GPU speed in one run: batch-1 decoding, the training step, k-shot scoring and pretraining MFU.

  decode   greedy batch-1 decoding, gpt2core's `generate` vs transformers' `generate` (same weights, `to_hf()`), and
           a static-shape step (bench-only) run eagerly and, on CUDA, captured once in a CUDA graph; tokens checked.
  fewshot  4-shot SST-2, `GPT2LM.loglikelihood` vs bench/fewshot.py's naive loop; skipped (the reason printed)
           without the data folder, as on the GPU machine.
  train    one optimizer step, ours vs `GPT2LMHeadModel` (sdpa), eager and compiled, both with fused AdamW, in
           pretraining's default precision for the device (bf16 autocast + compile on CUDA).
  mfu      the pretraining loop's own step (`Trainer._train_step`) on random tokens at the backbone-v2 sizes
           (configs/pretrain/v2/{s,l}.yaml as configured: bf16 + compile): tokens/s and `runlog.mfu`.

One line per measurement, then the JSON summary (also written to --out). On the GPU machine (expected 3-5 minutes,
mostly compiling; `--parts` reruns a subset):
    PYTHONUNBUFFERED=1 python3 bench/gpu.py --out $OUT/gpu.json
Here, on CPU (tiny preset, a few steps, seconds; `--compile true` also compiles, ~90 s):
    OMP_NUM_THREADS=1 .venv/bin/python bench/gpu.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
    os.environ.setdefault(_var, "1")
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]  # gpt2core without an install (the GPU box has no venv); fewshot.py

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gpt2core import GPT2Config, GPT2LMModel  # noqa: E402
from gpt2core.io import atomic_write_text  # noqa: E402
from gpt2core.kv_cache import KVCache  # noqa: E402
from gpt2core.paths import DATA_DIR_VAR, data_dir  # noqa: E402
from gpt2core.pretrain.batches import Batches  # noqa: E402
from gpt2core.pretrain.checkpoints import TrainState  # noqa: E402
from gpt2core.pretrain.config import PretrainConfig, load_config, resolved_for  # noqa: E402
from gpt2core.pretrain.distributed import Dist  # noqa: E402
from gpt2core.pretrain.loop import Trainer  # noqa: E402
from gpt2core.pretrain.optim import lr_at, make_optimizer  # noqa: E402
from gpt2core.pretrain.runlog import PEAK_FLOPS_BF16, mfu  # noqa: E402

Row = dict[str, Any]


def default_size() -> GPT2Config:
    return GPT2Config.from_preset("small-cpu", vocab_size=8192)  # today's backbone: 6 x 384, 512 positions, 8k BPE


def timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> tuple[float, Any]:
    """Median wall seconds of `fn` over `repeats` calls, its CUDA work included, and its last result."""
    times, out = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def failed(what: str, e: Exception, rows: list[Row]) -> None:
    """Print the error and keep it in `rows`: one broken variant must not cost the rest of a device run."""
    traceback.print_exc(limit=4)
    print(f"{what}: FAILED ({type(e).__name__}: {e})")
    rows.append({"variant": what, "error": f"{type(e).__name__}: {e}"[:400]})


def first_call(what: str, fn: Callable[[], Any], device: torch.device, rows: list[Row]) -> float | None:
    """Seconds of `fn`'s first call (compiling, capturing a graph), or None when it fails (see `failed`)."""
    try:
        return timed(fn, 1, device)[0]
    except Exception as e:  # noqa: BLE001
        failed(what, e, rows)
        return None


class StaticDecoder:
    """Batch-1 greedy decoding through gpt2core's modules with a step of fixed shapes: the position is a tensor,
    keys/values go in with `index_copy_`, attention reads every cache slot under a mask. Nothing in the step waits
    on the host, so on CUDA it is captured once in a CUDA graph and replayed per token. Bench-only: the step of
    gpt2core.generation (Python-int cache lengths, growing slices, host checks) cannot be captured as it is."""

    def __init__(self, model: GPT2LMModel, max_len: int, graph: bool):
        dev = model.device
        self.model = model
        self.cache = KVCache(model.config, 1, max_len, model.dtype, dev)
        self.cache.keys.zero_(), self.cache.values.zero_()  # masked slots must be finite: 0 * NaN is NaN
        self.slots = torch.arange(max_len, device=dev)
        self.ids = torch.zeros(1, dtype=torch.long, device=dev)
        self.pos = torch.zeros(1, dtype=torch.long, device=dev)
        self.graph: torch.cuda.CUDAGraph | None = None
        if graph:
            side = torch.cuda.Stream(dev)  # warm up off the capture stream (cuBLAS handles, kernel choice)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._step()
            torch.cuda.current_stream(dev).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.next = self._step()

    def _step(self) -> torch.Tensor:
        """Feed `ids` at `pos`; return the greedy next token (1,), also left in `ids`, and advance `pos`."""
        t, H, C = self.model.transformer, self.model.config.n_head, self.model.config.n_embd
        x = t.wte(self.ids) + t.wpe(self.pos)  # (1, C)
        mask = (self.slots <= self.pos)[None, None, None]  # (1, 1, 1, max_len)
        for i, b in enumerate(t.h):
            q, k, v = b.attn.c_attn(b.ln_1(x)).view(1, 3, H, 1, C // H).unbind(1)  # each (1, nh, 1, hs)
            self.cache.keys[i].index_copy_(2, self.pos, k)
            self.cache.values[i].index_copy_(2, self.pos, v)
            y = F.scaled_dot_product_attention(q, self.cache.keys[i], self.cache.values[i], attn_mask=mask)
            x = x + b.attn.c_proj(y.reshape(1, C))
            x = x + b.mlp.c_proj(F.gelu(b.mlp.c_fc(b.ln_2(x)), approximate="tanh"))
        nxt = self.model.lm_head(t.ln_f(x)).argmax(-1)
        self.ids.copy_(nxt)
        self.pos.add_(1)
        return nxt

    def generate(self, ids: torch.Tensor, new: int) -> torch.Tensor:
        """Prompt + `new` greedy tokens, (1, T + new): the prompt through the model's forward, then the step."""
        self.cache.lengths = [0] * len(self.cache.lengths)
        first = self.model(ids, past_key_values=self.cache, logits_to_keep=1).logits[:, -1].argmax(-1)
        self.ids.copy_(first)
        self.pos.fill_(ids.shape[1])
        out = [first]
        for _ in range(new - 1):
            if self.graph is None:
                out.append(self._step())
            else:
                self.graph.replay()
                out.append(self.next.clone())
        return torch.cat([ids, torch.stack(out, 1)], 1)


@torch.inference_mode()
def decode_one(name: str, config: GPT2Config, device: torch.device, prompt_len: int, new: int,
               repeats: int) -> list[Row]:
    torch.manual_seed(0)
    ours = GPT2LMModel(config).eval()
    ref = ours.to_hf().eval().to(device)
    ours = ours.to(device)
    ids = torch.randint(0, config.vocab_size - 1, (1, prompt_len)).to(device)
    mask = torch.ones_like(ids)
    decoders: dict[bool, StaticDecoder] = {}

    def static(graph: bool) -> torch.Tensor:  # built (on CUDA: captured) in the first, untimed call
        if graph not in decoders:
            decoders[graph] = StaticDecoder(ours, prompt_len + new, graph)
        return decoders[graph].generate(ids, new)

    runs: dict[str, Callable[[], torch.Tensor]] = {
        # min_new_tokens keeps transformers from stopping at EOS, like eos_token_id=[] on our side
        "transformers generate": lambda: ref.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                                                      min_new_tokens=new, pad_token_id=config.eos_token_id),
        "gpt2core generate": lambda: ours.generate(ids, attention_mask=mask, max_new_tokens=new, eos_token_id=[]),
        "static step, eager": lambda: static(False),
    }
    if device.type == "cuda":
        runs["static step, CUDA graph"] = lambda: static(True)
    rows: list[Row] = []
    runs = {label: fn for label, fn in runs.items()
            if first_call(f"decode {name} {label}", fn, device, rows) is not None}
    ref_out = None
    for label, fn in runs.items():
        sec, out = timed(fn, repeats, device)
        ref_out = out if ref_out is None else ref_out  # transformers' tokens (the first variant)
        same = bool(torch.equal(out, ref_out))
        rows.append({"size": name, "variant": label, "tok_per_s": round(new / sec, 1), "ms": round(sec * 1e3, 2),
                     "same_tokens_as_transformers": same})
        print(f"decode {name:8s} {label:26s} {new / sec:9.1f} tok/s ({sec * 1e3:7.1f} ms for {new} tokens; "
              f"tokens = transformers': {same})")
    return rows


def bench_decode(device: torch.device, smoke: bool) -> list[Row]:
    sizes = {"tiny": GPT2Config.from_preset("tiny")} if smoke else {"mini": GPT2Config.from_preset("mini"),
                                                                     "default": default_size()}
    prompt_len, new, repeats = (16, 24, 2) if smoke else (32, 128, 5)
    return [row for name, c in sizes.items() for row in decode_one(name, c, device, prompt_len, new, repeats)]


def bench_fewshot(device: torch.device, smoke: bool) -> Row:
    root = data_dir()
    missing = [n for n in ("classification/sst2", "corpus/tinyshakespeare/input.txt.gz")
               if root is None or not (root / n).exists()]
    if missing:
        why = f"no data folder (${DATA_DIR_VAR} unset, ../shared/data absent)" if root is None else \
            f"{root} lacks {', '.join(missing)}"
        print(f"fewshot skipped: {why}; pass --data-dir DIR (the shared data folder)")
        return {"skipped": why}
    try:  # tasks/ and its data loading (`datasets`) are needed for this part only
        import fewshot as fb  # bench/fewshot.py: its random model + BPE and its naive loop
        from tasks.data.load import load_rows
        from tasks.data.registry import get_task
        from tasks.kinds import get_kind
        from tasks.methods.fewshot import build_prompt, demo_text, sample_demos
        from tasks.models.lm import GPT2LM
    except ImportError as e:
        print(f"fewshot skipped: {e}")
        return {"skipped": str(e)}
    preset, vocab, examples, shots = ("tiny", 512, 8, 4) if smoke else ("mini", 8192, 128, 4)
    cpu_lm = fb.random_mini(preset, vocab, 0)
    lm = GPT2LM(cpu_lm.model.to(device), cpu_lm.tokenizer, batch_size=16)
    task = get_task("sst2")
    kind = get_kind(task.kind)
    demos = [demo_text(task, d) for d in sample_demos(task, load_rows(task, task.train_split), shots, 0)]
    reserve = kind.answer_room(task, lm)
    requests = [(build_prompt(task, lm, demos, r, reserve).context, v)
                for r in load_rows(task, task.eval_split)[:examples] for v in kind.verbalizers(task)]
    lm.loglikelihood(requests[:8]), fb.naive_scores(lm, requests[:4])  # warm-up
    t_ours, ours = timed(lambda: [lp for lp, _ in lm.loglikelihood(requests)], 1, device)
    t_naive, naive = timed(lambda: fb.naive_scores(lm, requests), 1, device)
    diff = max(abs(a - b) for a, b in zip(ours, naive))
    mean_len = sum(lm.token_count(c) for c, _ in requests) / len(requests)
    for label, sec in (("GPT2LM.loglikelihood", t_ours), ("naive loop", t_naive)):
        print(f"fewshot sst2 k={shots} {label:22s} {examples / sec:9.1f} examples/s ({sec:.2f} s; {preset}, mean "
              f"prompt {mean_len:.0f} tokens, max |ours - naive| {diff:.1e})")
    return {"preset": preset, "examples": examples, "shots": shots, "ours_examples_per_s": round(examples / t_ours, 1),
            "naive_examples_per_s": round(examples / t_naive, 1), "ratio": round(t_naive / t_ours, 2),
            "max_abs_diff": diff, "agree_1e-4": diff <= 1e-4}


def configure_training(device: torch.device) -> None:
    """As the pretraining loop sets torch up (`_configure_torch`): TF32 on CUDA, no denormals on CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_flush_denormal(True)


def compile_fresh(model: torch.nn.Module) -> Any:
    """torch.compile as in a fresh process: a second model of other shapes through the same code would otherwise be
    compiled for dynamic shapes (other kernels), and dynamo allows 8 recompiles."""
    torch._dynamo.reset()
    return torch.compile(model, dynamic=False)


def bench_train(device: torch.device, smoke: bool, compile_: bool | str) -> list[Row]:
    configure_training(device)
    fast = resolved_for(PretrainConfig(compile=compile_), device)  # pretraining's default for this device
    c = GPT2Config.from_preset("tiny") if smoke else default_size()
    batch, seq, rounds, steps = (4, 64, 2, 2) if smoke else (64, 512, 5, 10)
    torch.manual_seed(0)
    ours = GPT2LMModel(c).train()
    ref = ours.to_hf()  # GPT2LMHeadModel, same weights, training mode, transformers' default attention (sdpa)
    ours, ref = ours.to(device), ref.to(device)
    opt_ours = make_optimizer(ours, PretrainConfig(lr=1e-4), device.type)  # fused AdamW, as pretraining uses
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if fast.dtype == "bf16" else contextlib.nullcontext()
    data = torch.randint(0, c.vocab_size, (batch, seq + 1), generator=torch.Generator().manual_seed(0))
    x, y = data[:, :-1].to(device), data[:, 1:].to(device)

    def step(model: Any, raw: torch.nn.Module, opt: Any, hf: bool) -> float:
        with autocast:
            if hf:  # transformers' own loss: labels = inputs, shifted inside (one target fewer)
                loss = model(input_ids=x, labels=x).loss
            else:
                loss = model(input_ids=x, targets=y).loss  # as the pretraining loop (fused head + loss eager)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(raw.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    variants: dict[str, Callable[[], float]] = {}
    for label, raw, opt, hf in (("gpt2core", ours, opt_ours, False), ("transformers", ref, opt_ref, True)):
        variants[f"{label} eager"] = lambda raw=raw, opt=opt, hf=hf: step(raw, raw, opt, hf)
        if fast.compile:
            compiled = compile_fresh(raw)  # lazily: each compiles at its first step below
            variants[f"{label} compiled"] = lambda m=compiled, raw=raw, opt=opt, hf=hf: step(m, raw, opt, hf)
    rows: list[Row] = []
    first = {label: first_call(f"train {label}", fn, device, rows) for label, fn in variants.items()}
    variants = {label: fn for label, fn in variants.items() if first[label] is not None}
    for fn in variants.values():
        timed(fn, 2, device)  # warm-up
    rates: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(rounds):  # alternating rounds: drift in the machine's speed hits every variant alike
        for label, fn in variants.items():
            rates[label].append(steps * batch * seq / timed(lambda: [fn() for _ in range(steps)], 1, device)[0])
    fpt = c.flops_per_token(seq)
    for label, r in rates.items():
        tok_s = statistics.median(r)
        rows.append({"variant": label, "dtype": fast.dtype, "tok_per_s": round(tok_s),
                     "mfu": round(mfu(fpt, tok_s, 1), 4), "first_step_s": round(first[label], 2),
                     "batch": [batch, seq]})
        print(f"train  {label:24s} {fast.dtype} {tok_s:12,.0f} tok/s  MFU {mfu(fpt, tok_s, 1):.3f}  (first step "
              f"{first[label]:.1f} s; {c.n_layer}x{c.n_embd}, v{c.vocab_size}, batch {batch}x{seq}; transformers "
              f"attention {ref.config._attn_implementation})")
    return rows


def mfu_one(size: str, device: torch.device, smoke: bool, steps: int, compile_: bool | str) -> Row:
    # smoke: tiny shapes in the v2 configs, and dtype/compile back to auto (the configs say bf16 + compile)
    over: dict[str, Any] = dict(preset="tiny", model={}, seq_len=64, micro_batch_size=4, dtype="auto",
                                compile="auto") if smoke else {}
    if compile_ != "auto":
        over["compile"] = compile_
    cfg = resolved_for(load_config(REPO / "configs" / "pretrain" / "v2" / f"{size}.yaml", over), device)
    c = GPT2Config.from_preset(cfg.preset, vocab_size=cfg.corpus.tokenizer.vocab_size, **cfg.model)
    torch.manual_seed(cfg.seed)
    raw = GPT2LMModel(c).to(device).train()
    model = compile_fresh(raw) if cfg.compile else raw  # the loop: torch.compile(raw_model)
    # The loop's own step (micro-batches, autocast, loss, clipping, finiteness checks, fused AdamW) and its batches
    # (random windows, pinned and moved each step), over random tokens instead of a corpus: the attributes of a
    # Trainer that `_train_step` reads.
    tokens = np.random.default_rng(cfg.seed).integers(0, c.vocab_size, 2**22, dtype=np.uint16)
    trainer = SimpleNamespace(cfg=cfg, device=device, optimizer=make_optimizer(raw, cfg, device.type), fsdp=False,
                              batches=Batches(tokens, tokens[:2**16], cfg), state=TrainState(), dist=Dist(),
                              raw_model=raw,
                              autocast=(torch.autocast(device.type, dtype=torch.bfloat16) if cfg.dtype == "bf16"
                                        else contextlib.nullcontext()))
    warmup, n = (1, 2) if smoke else (5, steps)

    def one_step() -> None:
        Trainer._train_step(trainer, model, lr_at(trainer.state.step, cfg, warmup + n))
        trainer.state.step += 1

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    first = timed(one_step, 1, device)[0]
    for _ in range(warmup - 1):
        one_step()
    tok_s = n * cfg.tokens_per_step() / timed(lambda: [one_step() for _ in range(n)], 1, device)[0]
    fpt, util = c.flops_per_token(cfg.seq_len), mfu(c.flops_per_token(cfg.seq_len), tok_s, 1)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    print(f"mfu    v2/{size} {c.n_layer}x{c.n_embd} ({raw.num_parameters() / 1e6:.1f}M) {cfg.dtype}"
          f"{' compiled' if cfg.compile else ''} {cfg.optimizer}: {tok_s:12,.0f} tok/s  MFU {util:.3f} of "
          f"{PEAK_FLOPS_BF16 / 1e12:.0f} TFLOP/s ({n} steps of {cfg.tokens_per_step():,} tokens; first step "
          f"{first:.1f} s; peak {peak:.1f} GiB)")
    return {"size": size, "shape": f"{c.n_layer}x{c.n_embd}", "params": raw.num_parameters(), "dtype": cfg.dtype,
            "compile": cfg.compile, "optimizer": cfg.optimizer, "tokens_per_step": cfg.tokens_per_step(), "steps": n,
            "tok_per_s": round(tok_s), "flops_per_token": fpt, "mfu": round(util, 4), "first_step_s": round(first, 2),
            "peak_gib": round(peak, 2)}


def bench_mfu(device: torch.device, smoke: bool, steps: int, compile_: bool | str) -> list[Row]:
    configure_training(device)
    rows: list[Row] = []
    for size in ("s", "l"):
        try:
            rows.append(mfu_one(size, device, smoke, steps, compile_))
        except Exception as e:  # noqa: BLE001
            failed(f"mfu v2/{size}", e, rows)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "runs" / "bench" / "gpu.json"))
    ap.add_argument("--data-dir", help=f"the data folder for fewshot (default: ${DATA_DIR_VAR} or ../shared/data)")
    ap.add_argument("--device", help="default: cuda when torch sees one, else cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny preset, a few steps (tests the script on CPU)")
    ap.add_argument("--parts", nargs="+", default=["decode", "fewshot", "train", "mfu"],
                    choices=["decode", "fewshot", "train", "mfu"])
    ap.add_argument("--mfu-steps", type=int, default=40, help="timed optimizer steps per v2 size")
    ap.add_argument("--compile", choices=["auto", "true", "false"], default="auto",
                    help="torch.compile in train and mfu (auto: the configs'/device's choice; true: also on CPU)")
    args = ap.parse_args()
    if args.data_dir:
        os.environ[DATA_DIR_VAR] = str(Path(args.data_dir).resolve())
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    compile_ = {"auto": "auto", "true": True, "false": False}[args.compile]
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} CPU threads{', smoke' if args.smoke else ''}")
    summary: dict[str, Any] = {"device": name, "torch": torch.__version__, "transformers": transformers.__version__,
                               "smoke": args.smoke, "peak_flops_bf16": PEAK_FLOPS_BF16}
    parts: dict[str, Callable[[], Any]] = {
        "decode": lambda: bench_decode(device, args.smoke),
        "fewshot": lambda: bench_fewshot(device, args.smoke),
        "train": lambda: bench_train(device, args.smoke, compile_),
        "mfu": lambda: bench_mfu(device, args.smoke, args.mfu_steps, compile_),
    }
    broken, t_all = [], time.perf_counter()
    # In this order whatever --parts says: decoding and scoring run before the training parts turn TF32 on.
    for part in [p for p in parts if p in args.parts]:
        t0 = time.perf_counter()
        try:
            summary[part] = parts[part]()
        except Exception as e:  # noqa: BLE001  (a failing part is reported; the others still run)
            traceback.print_exc()
            summary[part] = {"error": f"{type(e).__name__}: {e}"}
        results = summary[part] if isinstance(summary[part], list) else [summary[part]]
        if any("error" in r for r in results):
            broken.append(part)
        summary[f"{part}_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"-- {part}: {summary[f'{part}_seconds']} s{' (with failures)' if part in broken else ''}")
    summary["seconds"] = round(time.perf_counter() - t_all, 1)
    out = atomic_write_text(args.out, json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    print(f"wrote {out}; {summary['seconds']} s{'; failures in: ' + ', '.join(broken) if broken else ''}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
