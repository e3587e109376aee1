"""The pretraining loop: AdamW + warmup/cosine, gradient accumulation, bf16 autocast, DDP or FSDP, checkpoints,
resume.

`train(cfg)` sets a run up (`Trainer`), restores it from a checkpoint when asked, steps it to `max_steps` (or the
time budget) and finishes it: the final model folder, held-out perplexities, `summary.json` and the loss plot.
How batches are drawn (`batches`), the optimizer (`optim`), checkpoints (`checkpoints`; sharded ones: `sharding`),
processes (`distributed`) and the run's files (`runlog`) each live in their own module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from gpt2core.checkpoint import save_hf_folder
from gpt2core.config import GPT2Config
from gpt2core.errors import CheckpointCorrupt, CheckpointError, ConfigError, TrainingDiverged
from gpt2core.io import remove_temporaries
from gpt2core.model import GPT2LMModel
from gpt2core.paths import expand_path
from gpt2core.pretrain.batches import DATA_SCHEME, Batches
from gpt2core.pretrain.checkpoints import (
    CORRUPT_HINT,
    TrainState,
    list_checkpoints,
    load_training_state,
    load_weights,
    save_checkpoint,
)
from gpt2core.pretrain.config import PretrainConfig, resolved_for
from gpt2core.pretrain.corpus import prepare_corpus
from gpt2core.pretrain.distributed import (
    Dist,
    all_reduce_mean,
    any_rank,
    barrier,
    init_distributed,
    resolve_device,
    shard_model,
    shutdown,
    wrap_model,
)
from gpt2core.pretrain.optim import lr_at, make_optimizer, set_lr
from gpt2core.pretrain.prepared import load_tokens, read_manifest
from gpt2core.pretrain.runlog import RunLog, mfu, plot_losses, write_summary
from gpt2core.pretrain.sharding import (
    full_model,
    is_sharded_checkpoint,
    load_sharded_state,
    load_whole_into_sharded,
    local,
    save_sharded_checkpoint,
    whole,
)
from gpt2core.tokenizer import load_tokenizer

__all__ = ["CheckpointCorrupt", "TrainingDiverged", "Trainer", "build_model", "train"]


def train(cfg: PretrainConfig, *, resume: bool = False, init_from: str | os.PathLike | None = None,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train per `cfg`; returns a summary (steps, tokens, losses, perplexities, paths).

    `resume`: continue from the latest checkpoint in `out_dir` (fresh start if there is none). `init_from`: a
    checkpoint folder (with trainer_state.pt: full resume) or a model folder (weights only, a fresh optimizer).
    A resume passes over corrupt checkpoints to the newest intact one (one log line each); temporaries a killed run
    left in `out_dir` are removed first. Raises `TrainingDiverged` on a NaN/inf loss, gradient norm or weights (a
    checkpoint of NaN weights is never written), `CheckpointCorrupt` when no checkpoint can be resumed from and
    `CheckpointError` for one of another vocabulary or size.
    """
    dist = init_distributed(cfg.device, cfg.parallelism)
    try:
        device = resolve_device(cfg.device, dist.local_rank)
        trainer = Trainer(cfg, dist, device, log if dist.is_main else (lambda *_: None))
        trainer.restore(resume, init_from)
        return trainer.run()
    finally:
        shutdown(dist)


def build_model(cfg: PretrainConfig, tokenizer: Any) -> GPT2LMModel:
    """A freshly initialised model of `cfg.preset` (+ `cfg.model` overrides) sized to the tokenizer."""
    eot = tokenizer.eos_token_id
    overrides = {"vocab_size": len(tokenizer), "bos_token_id": eot, "eos_token_id": eot, "pad_token_id": eot,
                 **cfg.model}
    config = GPT2Config.from_preset(cfg.preset, **overrides)
    if config.vocab_size < len(tokenizer):
        raise ConfigError(f"model.vocab_size={config.vocab_size} is smaller than the tokenizer's {len(tokenizer)}; "
                          "drop model.vocab_size or raise it")
    return GPT2LMModel(config)


def _configure_torch(device: torch.device, cfg: PretrainConfig, say: Callable[[str], None]) -> None:
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
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars at every checkpoint


class Trainer:
    """One pretraining run: its corpus, model, optimizer and `TrainState`, stepped by `run()`."""

    def __init__(self, cfg: PretrainConfig, dist: Dist, device: torch.device, say: Callable[[str], None]):
        cfg = resolved_for(cfg, device)  # dtype / compile `auto`: the fast path of this device
        self.cfg, self.dist, self.device, self.say = cfg, dist, device, say
        _configure_torch(device, cfg, say)
        self.out_dir = expand_path(cfg.out_dir)
        for path in cfg.ppl_eval:  # read only at the end of the run: a typo must not cost the whole run
            if not expand_path(path).is_file():
                raise ConfigError(f"ppl_eval: {path} ({expand_path(path)}) is not a file; fix the path or drop it")
        # Corpus: the main process prepares (or finds the cache), the others wait and then open it.
        if dist.is_main:
            self.corpus_dir = prepare_corpus(cfg.corpus, progress=cfg.progress, log=say)
        barrier(dist)
        if not dist.is_main:
            self.corpus_dir = prepare_corpus(cfg.corpus, progress=False, log=lambda *_: None)
        self.manifest = read_manifest(self.corpus_dir)
        self.tokenizer = load_tokenizer(self.corpus_dir / "tokenizer")
        self.batches = Batches(load_tokens(self.corpus_dir, "train"), load_tokens(self.corpus_dir, "val"), cfg,
                               dist.rank, dist.world)
        self.tokens_per_step = cfg.tokens_per_step(dist.world)
        self.max_steps = math.ceil(cfg.max_tokens / self.tokens_per_step) if cfg.max_tokens else cfg.max_steps

        torch.manual_seed(cfg.seed)
        self.fsdp = cfg.parallelism == "fsdp"
        model = build_model(cfg, self.tokenizer)
        # FSDP moves each block to the device as it shards it, so no device holds the whole model (and it comes
        # before the optimizer, which must hold the shards)
        self.raw_model = shard_model(model, device) if self.fsdp else model.to(device)
        self.optimizer = make_optimizer(self.raw_model, cfg, device.type)
        self.state = TrainState()
        self.last_ckpt: Path | None = None  # the newest checkpoint of this run: where a diverged run can restart
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.dtype == "bf16"
                         else contextlib.nullcontext())

    # ------------------------------------------------------------------------------------------ set-up

    def restore(self, resume: bool, init_from: str | os.PathLike | None) -> None:
        """Resume from the latest checkpoint (`resume`) or start from `init_from`; refuse to overwrite a run."""
        if self.dist.is_main:
            self._remove_temporaries()
        checkpoints = list_checkpoints(self.out_dir)
        if init_from is not None:
            ckpt = Path(init_from)
            if not ckpt.is_dir():
                raise CheckpointError(f"--init-from {ckpt} is not a folder; pass a checkpoint or model folder")
            if resume or (ckpt / "trainer_state.pt").exists():
                self._load_state(ckpt)
            else:
                load_weights(ckpt, self.raw_model)
                self.say(f"initialised the weights from {ckpt}")
        elif resume:
            if not checkpoints:
                self.say(f"resume: no checkpoint in {self.out_dir / 'checkpoints'}; starting from scratch")
            else:
                self.last_ckpt = self._resume(checkpoints)
        elif checkpoints:
            raise ConfigError(f"{self.out_dir} already holds checkpoints ({checkpoints[-1].name}); pass --resume to "
                              "continue or choose another --out")

    def _remove_temporaries(self) -> None:
        """What a killed run left half-written (hidden `.step_*`, `.model.*`, `.*.tmp`) goes before anything is read."""
        removed = remove_temporaries(self.out_dir) + remove_temporaries(self.out_dir / "checkpoints")
        if removed:
            names = ", ".join(str(p.relative_to(self.out_dir)) for p in removed)
            self.say(f"removed {len(removed)} half-written temporar{'ies' if len(removed) > 1 else 'y'} an "
                     f"interrupted run left in {self.out_dir}: {names}")

    def _resume(self, checkpoints: list[Path]) -> Path:
        """Load the newest checkpoint that is intact, saying which corrupt ones were passed over; all corrupt: raise."""
        problems = []
        for i, ckpt in enumerate(reversed(checkpoints)):
            try:
                self._load_state(ckpt)
                return ckpt
            except CheckpointCorrupt as e:
                why = str(e).removesuffix(f"; {CORRUPT_HINT}")
                problems.append(f"{ckpt.name}: {why}")
                if i + 1 < len(checkpoints):
                    self.say(f"resume: {ckpt} is corrupt ({why}); it is left in place; falling back to the previous "
                             f"checkpoint {checkpoints[-2 - i].name}")
        raise CheckpointCorrupt(f"resume: no checkpoint in {self.out_dir / 'checkpoints'} can be resumed from "
                                f"({'; '.join(problems)}); they are left in place: restore one, or move them away (or "
                                "choose another --out) to start from scratch")

    def _load_state(self, ckpt: Path) -> None:
        if is_sharded_checkpoint(ckpt):  # DCP reshards: also into a DDP run or another number of ranks
            self.state = load_sharded_state(ckpt, self.raw_model, self.optimizer, self.dist, self.device)
        elif self.fsdp:  # a DDP checkpoint: each rank reads it whole, then keeps its shards
            self.state = load_whole_into_sharded(ckpt, self.raw_model, self.optimizer, self.cfg)
        else:
            self.state = load_training_state(ckpt, self.raw_model, self.optimizer)
        world, tps = self.state.world_size, self.state.tokens_per_step
        if (world or self.dist.world) != self.dist.world or (tps or self.tokens_per_step) != self.tokens_per_step:
            self.say(f"note: {ckpt} was written with world_size={world} and {tps} tokens/step; continuing "
                     f"with {self.dist.world} and {self.tokens_per_step}")
        self.say(f"resumed from {ckpt} at step {self.state.step} ({self.state.tokens:,} tokens)")

    # ------------------------------------------------------------------------------------------ steps

    def _train_step(self, model: torch.nn.Module, lr: float) -> tuple[float, torch.Tensor | None]:
        """One optimizer step over `grad_accum` micro-batches: (mean loss over all ranks, grad norm or None)."""
        cfg, device = self.cfg, self.device
        set_lr(self.optimizer, lr)
        loss_sum = torch.zeros((), device=device)
        for micro in range(cfg.grad_accum):
            x, y = self.batches.train_batch(self.state.step, micro)
            if device.type == "cuda":
                x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
            # DDP: all-reduce on the last micro-step only; FSDP reduce-scatters each one (gradients stay sharded)
            defer = self.dist.enabled and not self.fsdp and micro < cfg.grad_accum - 1
            with (model.no_sync() if defer else contextlib.nullcontext()), self.autocast:
                loss = model(input_ids=x, targets=y).loss  # the LM head fused with the loss
            (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach()
        loss_mean = float(all_reduce_mean(loss_sum / cfg.grad_accum, self.dist))
        if not math.isfinite(loss_mean):
            self.optimizer.zero_grad(set_to_none=True)
            return loss_mean, None
        grad_norm = (whole(torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.grad_clip))
                     if cfg.grad_clip > 0 else None)
        if grad_norm is not None and not math.isfinite(float(grad_norm)):  # the update would make the weights NaN
            self.optimizer.zero_grad(set_to_none=True)
            return loss_mean, grad_norm
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_mean, grad_norm

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> float:
        """Mean validation loss over `eval_iters` fixed batches, shared out among the ranks."""
        cfg, d = self.cfg, self.dist
        eval_model = model.module if d.enabled and not self.fsdp else model  # no DDP hooks for forward-only passes
        model.eval()
        total = torch.zeros((), device=self.device)
        # FSDP: each forward gathers shards from every rank, so all ranks run as many (the extra ones count nothing)
        end = -(-cfg.eval_iters // d.world) * d.world if self.fsdp else cfg.eval_iters
        for i in range(d.rank, end, d.world):
            x, y = self.batches.val_batch(i % cfg.eval_iters)
            with self.autocast:
                logits = eval_model(input_ids=x.to(self.device)).logits
            if i < cfg.eval_iters:
                total += F.cross_entropy(logits.float().flatten(0, 1), y.to(self.device).flatten())
        model.train()
        total = all_reduce_mean(total, d) * d.world  # sum over ranks
        return float(total) / cfg.eval_iters

    def checkpoint(self, elapsed: float) -> Path | None:
        """Save a checkpoint (main process; FSDP: every rank its shards) and wait for it on every rank; its path on
        the main process (FSDP: on every rank)."""
        path = None
        state = dataclasses.replace(self.state, elapsed=elapsed, world_size=self.dist.world,
                                    tokens_per_step=self.tokens_per_step, seed=self.cfg.seed, data=DATA_SCHEME,
                                    corpus_key=self.manifest["key"])
        if self.fsdp:
            path = save_sharded_checkpoint(self.out_dir, self.raw_model, self.tokenizer, self.optimizer, state,
                                           self.cfg, self.dist)
        elif self.dist.is_main:
            path = save_checkpoint(self.out_dir, self.raw_model, self.tokenizer, self.optimizer, state, self.cfg)
        barrier(self.dist)
        self.last_ckpt = path
        return path

    # ------------------------------------------------------------------------------------------ the loop

    def run(self) -> dict[str, Any]:
        """Step to `max_steps` (or the time budget), checkpointing on the way; then `finish`."""
        from tqdm.auto import tqdm

        cfg, d, state = self.cfg, self.dist, self.state
        model: Any = torch.compile(self.raw_model) if cfg.compile else self.raw_model
        model = wrap_model(model, d, self.device, cfg.parallelism)
        runlog = RunLog(self.out_dir, d.is_main, state.step)
        n_params = sum(p.numel() for p in self.raw_model.parameters())
        fpt = self.raw_model.config.flops_per_token(cfg.seq_len)
        tokens = self.manifest["tokens"]
        self.say(f"model {cfg.preset}: {n_params / 1e6:.2f}M parameters, vocab {self.raw_model.config.vocab_size}; "
                 f"corpus {tokens['train']:,} train / {tokens['val']:,} val tokens; {self.tokens_per_step:,} "
                 f"tokens/step x {self.max_steps} steps on {self.device} ({d.world} "
                 f"process{'es' if d.world > 1 else ''}, {cfg.dtype}{', compiled' if cfg.compile else ''})")

        bar = tqdm(total=self.max_steps, initial=state.step, desc="pretrain", unit="step",
                   disable=not (d.is_main and cfg.progress), dynamic_ncols=True)
        t_start, prior_elapsed = time.time(), float(state.elapsed)
        elapsed = lambda: prior_elapsed + time.time() - t_start  # noqa: E731
        last_saved_step = state.step if self.last_ckpt is not None else -1
        stop_reason, loss = "max_steps", float("nan")
        t_log, tokens_log = time.time(), 0
        model.train()
        while state.step < self.max_steps:
            lr = lr_at(state.step, cfg, self.max_steps)
            loss, grad_norm = self._train_step(model, lr)
            if not math.isfinite(loss) or (grad_norm is not None and not math.isfinite(float(grad_norm))):
                what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {float(grad_norm)}"
                bar.close()
                self._diverged(runlog, state.step + 1, f"{what} at step {state.step + 1}; stopped before that update")
            state.step += 1
            state.tokens += self.tokens_per_step
            tokens_log += self.tokens_per_step
            bar.update(1)
            last = state.step == self.max_steps

            if state.step % cfg.log_interval == 0 or last:
                now = time.time()
                tok_s = tokens_log / max(now - t_log, 1e-9)
                rec = {"step": state.step, "loss": loss, "lr": lr, "tokens": state.tokens,
                       "tok_per_s": round(tok_s, 1), "elapsed": round(elapsed(), 2)}
                if grad_norm is not None:
                    rec["grad_norm"] = float(grad_norm)
                if self.device.type == "cuda":
                    rec["mfu"] = round(mfu(fpt, tok_s, d.world), 4)
                runlog.write(rec)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_s:,.0f}")
                t_log, tokens_log = now, 0
            if state.step % cfg.eval_interval == 0 or last:
                val = self.evaluate(model)
                runlog.write({"step": state.step, "val_loss": val, "val_ppl": math.exp(min(val, 700)),
                              "tokens": state.tokens, "elapsed": round(elapsed(), 2)})
                if d.is_main:
                    bar.write(f"step {state.step}: train loss {loss:.4f}, val loss {val:.4f} "
                              f"(ppl {math.exp(min(val, 700)):.1f})")
            out_of_time = any_rank(cfg.max_time_minutes is not None
                                   and time.time() - t_start >= cfg.max_time_minutes * 60, d, self.device)
            if state.step % cfg.checkpoint_interval == 0 or out_of_time or last:
                self._check_weights(runlog, bar)
                self.checkpoint(elapsed())
                last_saved_step = state.step
            if out_of_time:
                stop_reason = "max_time_minutes"
                self.say(f"time budget of {cfg.max_time_minutes} minutes reached at step {state.step}; checkpointed")
                break
        bar.close()
        if state.step != last_saved_step and state.step > 0:
            self._check_weights(runlog, bar)
            self.checkpoint(elapsed())
        summary = {"status": "ok", "stop_reason": stop_reason, "step": state.step, "max_steps": self.max_steps,
                   "tokens": state.tokens, "elapsed": round(elapsed(), 2),
                   "final_loss": loss if math.isfinite(loss) else None,
                   "checkpoint": str(self.last_ckpt) if self.last_ckpt else None, "out_dir": str(self.out_dir),
                   "parameters": n_params, "corpus": str(self.corpus_dir)}
        return self.finish(summary, runlog)

    def _check_weights(self, runlog: RunLog, bar: Any) -> None:
        """A checkpoint of NaN/inf weights is never written (nor reported as good): stop the run instead."""
        bad = [n for n, p in self.raw_model.named_parameters() if not bool(torch.isfinite(local(p)).all())]
        if any_rank(bool(bad), self.dist, self.device):  # FSDP: a rank sees only its shards; all ranks stop
            bar.close()
            what = f"{len(bad)} tensors, e.g. {bad[0]}" if bad else "in another rank's shards"
            self._diverged(runlog, self.state.step, f"the weights hold NaN or inf after step {self.state.step} "
                           f"({what}) although its loss was finite; no checkpoint was written for it")

    def _diverged(self, runlog: RunLog, step: int, what: str) -> None:
        where = (f"the last good checkpoint is {self.last_ckpt}" if self.last_ckpt
                 else "no checkpoint was written before it")
        runlog.write({"step": step, "event": "diverged", "reason": what})
        raise TrainingDiverged(f"{what}; {where}; lower lr (or raise warmup_steps) and start again")

    def finish(self, summary: dict[str, Any], runlog: RunLog) -> dict[str, Any]:
        """The final model folder, held-out perplexities, `summary.json` and the loss plot (main process)."""
        cfg = self.cfg
        val = runlog.last_val()
        if val:
            summary["val_loss"], summary["val_ppl"] = val["val_loss"], val["val_ppl"]
        # FSDP: the shards are gathered into one plain model on rank 0 (collective); DDP: every rank has it whole
        final = full_model(self.raw_model, self.dist) if self.fsdp else self.raw_model
        if not self.dist.is_main:
            return summary
        summary["model"] = str(self.out_dir / "model")
        if cfg.ppl_eval:
            from gpt2core.pretrain.evaluate import evaluate_perplexity

            final = final.to(self.device)

            summary["ppl_eval"] = {}
            for path in cfg.ppl_eval:
                res = evaluate_perplexity(final, self.tokenizer, expand_path(path), cfg.seq_len,
                                          cfg.ppl_eval_stride or cfg.seq_len // 2, max_chars=cfg.ppl_eval_max_chars,
                                          batch_size=cfg.eval_batch_size or cfg.micro_batch_size,
                                          dtype=torch.bfloat16 if cfg.dtype == "bf16" else None)
                summary["ppl_eval"][str(path)] = res
                self.say(f"{Path(path).name}: ppl {res['ppl']:.2f}, {res['bpb']:.4f} bits/byte over "
                         f"{res['tokens']:,} tokens")

        # A vanilla Hugging Face GPT-2 folder (weights, tokenizer and summary appear together, in one rename):
        # the backbone opens in plain transformers, lm-evaluation-harness and every other GPT-2 tool.
        save_hf_folder(final, self.tokenizer, self.out_dir / "model", max_shard_size=cfg.max_shard_size,
                       extra=lambda tmp: write_summary(tmp, summary))
        write_summary(self.out_dir, summary)
        try:
            summary["plot"] = str(plot_losses(runlog.history, self.out_dir / "loss.png", cfg.plot_path))
        except ImportError as e:  # matplotlib is optional for training itself
            self.say(f"no loss plot ({e})")
        return summary
