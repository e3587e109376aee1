"""The pretraining loop: AdamW + warmup/cosine, gradient accumulation, bf16 autocast, DDP, checkpoints, resume.

Data order is a function of (seed, step) alone: the batch of optimizer step `k` takes `micro_batch_size *
grad_accum * world_size` windows at offsets drawn from a generator seeded by (seed, k). Row block `(micro * world +
rank)` goes to that rank's micro-step, so one process with `grad_accum * K` sees the same global batch as K
processes, and a resumed run sees exactly the batches the uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from gpt2core.pretrain.config import PretrainConfig, expand_path

# Dense bf16 peak of an H100/H200 SXM (989.4 TFLOP/s, NVIDIA's datasheet, without sparsity). Matrix products
# measured on this project's H200 reach about 790, so an MFU near 0.8 would be the practical ceiling.
PEAK_FLOPS_BF16 = 989e12
DATA_SCHEME = "random-offsets-v1: step k draws its windows from torch.Generator().manual_seed((seed << 32) + k)"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; training stopped before the bad update."""


class CheckpointCorrupt(ValueError):
    """A checkpoint that cannot be resumed from as it is (it is left in place)."""


# ---------------------------------------------------------------------------------------------- data


class Batches:
    """Deterministic training and validation windows from token memmaps."""

    def __init__(self, train: np.ndarray, val: np.ndarray, cfg: PretrainConfig, rank: int = 0, world: int = 1):
        self.train, self.val, self.cfg, self.rank, self.world = train, val, cfg, rank, world
        for name, arr in (("train", train), ("val", val)):
            if len(arr) < cfg.seq_len + 2:
                raise ValueError(f"the {name} split holds {len(arr)} tokens, fewer than seq_len + 2 = "
                                 f"{cfg.seq_len + 2}; use more text or a shorter seq_len")

    def _rows(self, arr: np.ndarray, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.cfg.seq_len
        rows = np.stack([arr[o:o + T + 1] for o in offsets.tolist()]).astype(np.int64)
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]

    def train_batch(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, mb = self.cfg, self.cfg.micro_batch_size
        g = torch.Generator().manual_seed((cfg.seed << 32) + step)
        offsets = torch.randint(0, len(self.train) - cfg.seq_len - 1, (mb * cfg.grad_accum * self.world,),
                                generator=g)
        block = micro * self.world + self.rank
        return self._rows(self.train, offsets[block * mb:(block + 1) * mb])

    def val_batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        g = torch.Generator().manual_seed((cfg.seed << 32) + (1 << 31) + i)
        offsets = torch.randint(0, len(self.val) - cfg.seq_len - 1, (cfg.eval_batch_size or cfg.micro_batch_size,),
                                generator=g)
        return self._rows(self.val, offsets)


# ---------------------------------------------------------------------------------------------- pieces


def lr_at(step: int, cfg: PretrainConfig, max_steps: int) -> float:
    """Linear warmup over `warmup_steps`, then cosine decay to `min_lr` at `lr_decay_steps` (default max_steps)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = cfg.lr_decay_steps or max_steps
    if step >= decay_steps:
        return cfg.min_lr
    ratio = (step - cfg.warmup_steps) / max(1, decay_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)


def make_optimizer(model: torch.nn.Module, cfg: PretrainConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW with weight decay on 2-D weights (matrices, embeddings) only; fused kernels on CUDA and CPU.

    On CPU the fused step of `mini` takes 7.5 ms against 46 ms for the default (foreach) one, 1 thread."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    extra = {"fused": True} if device_type in ("cuda", "cpu") else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **extra)


def flops_per_token(config: Any, seq_len: int) -> float:
    """nanoGPT's estimate: 6 N (forward + backward of the weights) + 12 L H Q T (attention scores)."""
    d = config.n_embd
    inner = config.n_inner or 4 * d
    n = config.vocab_size * d + config.n_layer * (4 * d * d + 2 * d * inner)  # wpe excluded, tied lm_head once
    return 6 * n + 12 * config.n_layer * config.n_head * (d // config.n_head) * seq_len


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device: cuda was asked for but torch sees no CUDA device; use device: cpu")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def build_model(cfg: PretrainConfig, tokenizer: Any) -> Any:
    from gpt2core.config import GPT2Config
    from gpt2core.model import GPT2LMModel

    eot = tokenizer.eos_token_id
    overrides = {"vocab_size": len(tokenizer), "bos_token_id": eot, "eos_token_id": eot, "pad_token_id": eot,
                 **cfg.model}
    config = GPT2Config.from_preset(cfg.preset, **overrides)
    if config.vocab_size < len(tokenizer):
        raise ValueError(f"model.vocab_size={config.vocab_size} is smaller than the tokenizer's {len(tokenizer)}")
    return GPT2LMModel(config)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": np_state[2],
                  "has_gauss": np_state[3], "cached_gaussian": np_state[4]},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------- checkpoints


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints (step_XXXXXX folders; half-written ones are hidden temp folders), oldest first."""
    root = out_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def save_checkpoint(out_dir: Path, raw_model: Any, tokenizer: Any, optimizer: Any, state: dict[str, Any],
                    cfg: PretrainConfig) -> Path:
    root = out_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{state['step']:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        raw_model.save_pretrained(tmp, max_shard_size=cfg.max_shard_size)
        tokenizer.save_pretrained(tmp)
        torch.save({**state, "optimizer": optimizer.state_dict(), "rng": _rng_state()}, tmp / "trainer_state.pt")
        (tmp / "pretrain_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
        if final.exists():
            old = root / f".{final.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(out_dir)[:-cfg.keep_last_k]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, raw_model: Any, optimizer: Any | None) -> dict[str, Any]:
    """Load weights (+ optimizer) into place; returns the trainer state. A damaged file is named, never deleted."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    hint = "it is left in place; delete or move it to resume from the previous checkpoint"
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointCorrupt(f"checkpoint {path} holds no *.safetensors weights; {hint}")
    state_dict: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state_dict.update(load_file(f, device="cpu"))
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            raise CheckpointCorrupt(f"checkpoint weights {f} are truncated or corrupt ({e}); {hint}") from e
    tied = {"lm_head.weight"} if raw_model.config.tie_word_embeddings else set()
    missing, unexpected = raw_model.load_state_dict(state_dict, strict=False)
    if set(missing) - tied or unexpected:
        raise CheckpointCorrupt(f"checkpoint {path} does not match the model (missing {sorted(set(missing) - tied)}, "
                                f"unexpected {sorted(unexpected)}); {hint}")
    if raw_model.config.tie_word_embeddings:
        raw_model.tie_weights()
    if optimizer is None:
        return {}
    try:
        state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
    except FileNotFoundError:
        raise CheckpointCorrupt(f"checkpoint {path} has no trainer_state.pt; {hint}") from None
    except Exception as e:  # torch.load raises many types for a damaged pickle/zip
        raise CheckpointCorrupt(f"checkpoint {path / 'trainer_state.pt'} is corrupt ({type(e).__name__}: {e}); "
                                f"{hint}") from e
    return state


# ---------------------------------------------------------------------------------------------- training


@dataclasses.dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False


def _init_distributed(device_pref: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    use_cuda = device_pref != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), True)


def _all_reduce_mean(t: torch.Tensor, d: _Dist) -> torch.Tensor:
    if d.enabled:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t = t / d.world
    return t


def train(cfg: PretrainConfig, *, resume: bool = False, init_from: str | os.PathLike | None = None,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train per `cfg`; returns a summary (steps, tokens, losses, perplexities, paths).

    `resume`: continue from the latest checkpoint in `out_dir` (fresh start if there is none). `init_from`: a
    checkpoint folder (with trainer_state.pt: full resume) or a model folder (weights only, a fresh optimizer).
    Raises `TrainingDiverged` on a NaN/inf loss and `CheckpointCorrupt` for a damaged checkpoint.
    """
    from gpt2core.pretrain.corpus import load_tokens, prepare_corpus, read_manifest
    from gpt2core.tokenizer import load_tokenizer

    d = _init_distributed(cfg.device)
    device = resolve_device(cfg.device, d.local_rank)
    is_main = d.rank == 0
    say = log if is_main else (lambda *_: None)
    try:
        return _train(cfg, d, device, is_main, say, resume, init_from, prepare_corpus, load_tokens, read_manifest,
                      load_tokenizer)
    finally:
        if d.enabled:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(cfg, d, device, is_main, say, resume, init_from, prepare_corpus, load_tokens, read_manifest,
           load_tokenizer) -> dict[str, Any]:
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # a denormal-heavy step can be 20x slower on CPU
        if cfg.dtype == "bf16" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            say(f"WARNING: dtype bf16 on a CPU without native bf16 ({torch.backends.cpu.get_cpu_capability()}): "
                "autocast is emulated and about 20x slower than fp32 here; use --dtype fp32")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
    else:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
    out_dir = expand_path(cfg.out_dir)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars at every checkpoint

    # Corpus: the main process prepares (or finds the cache), the others wait and then open it.
    if is_main:
        corpus_dir = prepare_corpus(cfg.corpus, progress=cfg.progress, log=say)
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()
    if not is_main:
        corpus_dir = prepare_corpus(cfg.corpus, progress=False, log=lambda *_: None)
    manifest = read_manifest(corpus_dir)
    tokenizer = load_tokenizer(corpus_dir / "tokenizer")
    batches = Batches(load_tokens(corpus_dir, "train"), load_tokens(corpus_dir, "val"), cfg, d.rank, d.world)

    tokens_per_step = cfg.tokens_per_step(d.world)
    max_steps = math.ceil(cfg.max_tokens / tokens_per_step) if cfg.max_tokens else cfg.max_steps

    torch.manual_seed(cfg.seed)
    raw_model = build_model(cfg, tokenizer).to(device)
    optimizer = make_optimizer(raw_model, cfg, device.type)

    ckpt: Path | None = None
    checkpoints = list_checkpoints(out_dir)
    if init_from is not None:
        ckpt = Path(init_from)
        if not ckpt.is_dir():
            raise FileNotFoundError(f"--init-from {ckpt} is not a folder")
    elif resume:
        ckpt = checkpoints[-1] if checkpoints else None
        if ckpt is None:
            say(f"resume: no checkpoint in {out_dir / 'checkpoints'}; starting from scratch")
    elif checkpoints:
        raise ValueError(f"{out_dir} already holds checkpoints ({checkpoints[-1].name}); pass --resume to continue "
                         "or choose another --out")

    state: dict[str, Any] = {"step": 0, "tokens": 0, "elapsed": 0.0}
    if ckpt is not None and (resume or (ckpt / "trainer_state.pt").exists()):
        state = load_checkpoint(ckpt, raw_model, optimizer)
        if state.get("world_size", d.world) != d.world or state.get("tokens_per_step", tokens_per_step) != tokens_per_step:
            say(f"note: {ckpt} was written with world_size={state.get('world_size')} and "
                f"{state.get('tokens_per_step')} tokens/step; continuing with {d.world} and {tokens_per_step}")
        _set_rng_state(state["rng"])
        say(f"resumed from {ckpt} at step {state['step']} ({state['tokens']:,} tokens)")
    elif ckpt is not None:
        load_checkpoint(ckpt, raw_model, None)
        say(f"initialised the weights from {ckpt}")
    step = int(state["step"])

    model: Any = raw_model
    if cfg.compile:
        model = torch.compile(model)
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.dtype == "bf16"
                else contextlib.nullcontext())

    metrics_path = out_dir / "metrics.jsonl"
    history: list[dict[str, Any]] = []
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if step > 0 and metrics_path.exists():  # drop records of steps past the checkpoint (a later, lost run)
            history = [r for r in map(json.loads, metrics_path.read_text().splitlines()) if r.get("step", 0) <= step]
        _rewrite_jsonl(metrics_path, history)
    n_params = sum(p.numel() for p in raw_model.parameters())
    fpt = flops_per_token(raw_model.config, cfg.seq_len)
    say(f"model {cfg.preset}: {n_params / 1e6:.2f}M parameters, vocab {raw_model.config.vocab_size}; corpus "
        f"{manifest['tokens']['train']:,} train / {manifest['tokens']['val']:,} val tokens; {tokens_per_step:,} "
        f"tokens/step x {max_steps} steps on {device} ({d.world} process{'es' if d.world > 1 else ''}, {cfg.dtype})")

    def log_record(rec: dict[str, Any]) -> None:
        if is_main:
            history.append(rec)
            with open(metrics_path, "a") as f:
                f.write(json.dumps(rec) + "\n")

    eval_model = model.module if d.enabled else model  # no DDP hooks for forward-only passes

    @torch.no_grad()
    def evaluate() -> float:
        model.eval()
        total = torch.zeros((), device=device)
        n = 0
        for i in range(d.rank, cfg.eval_iters, d.world):
            x, y = batches.val_batch(i)
            with autocast:
                logits = eval_model(input_ids=x.to(device)).logits
            total += F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten())
            n += 1
        model.train()
        total = _all_reduce_mean(total, d) * d.world  # sum over ranks
        return float(total) / cfg.eval_iters

    def checkpoint() -> Path | None:
        if is_main:
            path = save_checkpoint(out_dir, raw_model, tokenizer, optimizer, {
                "step": step, "tokens": state["tokens"], "elapsed": elapsed(), "world_size": d.world,
                "tokens_per_step": tokens_per_step, "seed": cfg.seed, "data": DATA_SCHEME,
                "corpus_key": manifest["key"]}, cfg)
        if d.enabled:
            import torch.distributed as dist

            dist.barrier()
        return path if is_main else None

    from tqdm.auto import tqdm

    bar = tqdm(total=max_steps, initial=step, desc="pretrain", unit="step", disable=not (is_main and cfg.progress),
               dynamic_ncols=True)
    t_start = time.time()
    prior_elapsed = float(state.get("elapsed", 0.0))
    elapsed = lambda: prior_elapsed + time.time() - t_start  # noqa: E731
    last_ckpt: Path | None = ckpt if ckpt is not None and resume else None
    last_saved_step = step if last_ckpt is not None else -1
    stop_reason = "max_steps"
    t_log, tokens_log = time.time(), 0
    last_loss = float("nan")
    model.train()
    while step < max_steps:
        lr = lr_at(step, cfg, max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        for micro in range(cfg.grad_accum):
            x, y = batches.train_batch(step, micro)
            if device.type == "cuda":
                x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
            sync = not d.enabled or micro == cfg.grad_accum - 1
            with (contextlib.nullcontext() if sync else model.no_sync()), autocast:
                logits = model(input_ids=x).logits
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach()
        loss_mean = _all_reduce_mean(loss_sum / cfg.grad_accum, d)
        last_loss = float(loss_mean)
        if not math.isfinite(last_loss):
            optimizer.zero_grad(set_to_none=True)
            where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written before it"
            log_record({"step": step + 1, "event": "diverged", "loss": str(last_loss)})
            bar.close()
            raise TrainingDiverged(f"loss is {last_loss} at step {step + 1}; stopped before that update; {where}")
        grad_norm = (torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0
                     else None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        state["tokens"] += tokens_per_step
        tokens_log += tokens_per_step
        bar.update(1)

        if step % cfg.log_interval == 0 or step == max_steps:
            now = time.time()
            tok_s = tokens_log / max(now - t_log, 1e-9)
            rec = {"step": step, "loss": last_loss, "lr": lr, "tokens": state["tokens"], "tok_per_s": round(tok_s, 1),
                   "elapsed": round(elapsed(), 2)}
            if grad_norm is not None:
                rec["grad_norm"] = float(grad_norm)
            if device.type == "cuda":
                rec["mfu"] = round(fpt * tok_s / (PEAK_FLOPS_BF16 * d.world), 4)
            log_record(rec)
            bar.set_postfix(loss=f"{last_loss:.4f}", tok_s=f"{tok_s:,.0f}")
            t_log, tokens_log = now, 0
        if step % cfg.eval_interval == 0 or step == max_steps:
            val = evaluate()
            log_record({"step": step, "val_loss": val, "val_ppl": math.exp(min(val, 700)), "tokens": state["tokens"],
                        "elapsed": round(elapsed(), 2)})
            if is_main:
                bar.write(f"step {step}: train loss {last_loss:.4f}, val loss {val:.4f} (ppl {math.exp(val):.1f})")
        out_of_time = torch.tensor(
            float(cfg.max_time_minutes is not None and time.time() - t_start >= cfg.max_time_minutes * 60),
            device=device)
        if d.enabled:
            import torch.distributed as dist

            dist.all_reduce(out_of_time, op=dist.ReduceOp.MAX)  # all ranks stop at the same step
        if step % cfg.checkpoint_interval == 0 or out_of_time.item() or step == max_steps:
            last_ckpt, last_saved_step = checkpoint(), step
        if out_of_time.item():
            stop_reason = "max_time_minutes"
            say(f"time budget of {cfg.max_time_minutes} minutes reached at step {step}; checkpointed")
            break
    bar.close()
    if step != last_saved_step and step > 0:
        last_ckpt = checkpoint()

    summary: dict[str, Any] = {"status": "ok", "stop_reason": stop_reason, "step": step, "max_steps": max_steps,
                               "tokens": state["tokens"], "elapsed": round(elapsed(), 2), "final_loss": last_loss if math.isfinite(last_loss) else None,
                               "checkpoint": str(last_ckpt) if last_ckpt else None, "out_dir": str(out_dir),
                               "parameters": n_params, "corpus": str(corpus_dir)}
    vals = [r for r in history if "val_loss" in r]
    if vals:
        summary["val_loss"] = vals[-1]["val_loss"]
        summary["val_ppl"] = vals[-1]["val_ppl"]
    if is_main:
        from gpt2core.checkpoint import atomic_save_pretrained

        final_dir = atomic_save_pretrained(raw_model, out_dir / "model", max_shard_size=cfg.max_shard_size)
        tokenizer.save_pretrained(final_dir)
        summary["model"] = str(final_dir)
        if cfg.ppl_eval:
            from gpt2core.pretrain.evaluate import evaluate_perplexity

            summary["ppl_eval"] = {}
            for path in cfg.ppl_eval:
                res = evaluate_perplexity(raw_model, tokenizer, expand_path(path), cfg.seq_len,
                                          cfg.ppl_eval_stride or cfg.seq_len // 2, max_chars=cfg.ppl_eval_max_chars,
                                          batch_size=cfg.eval_batch_size or cfg.micro_batch_size,
                                          dtype=torch.bfloat16 if cfg.dtype == "bf16" else None)
                summary["ppl_eval"][str(path)] = res
                say(f"{Path(path).name}: ppl {res['ppl']:.2f}, {res['bpb']:.4f} bits/byte over {res['tokens']:,} "
                    "tokens")
        _write_json(out_dir / "summary.json", summary)
        try:
            summary["plot"] = str(plot_losses(history, out_dir / "loss.png", cfg.plot_path))
        except ImportError as e:  # matplotlib is optional for training itself
            say(f"no loss plot ({e})")
    return summary


def _rewrite_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def plot_losses(history: list[dict[str, Any]], path: Path, extra: str | None = None) -> Path:
    """Train and validation loss against tokens seen, as a PNG (also copied to `extra` when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["tokens"], r["loss"]) for r in history if "loss" in r and "event" not in r]
    val = [(r["tokens"], r["val_loss"]) for r in history if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", ms=3)
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    if extra:
        target = expand_path(extra)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return path
