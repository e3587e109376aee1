"""The bad-input catalogue: every input a user can get wrong gets one line that names the problem and what to do
(exit status 2 on the command line, a `GPT2SuiteError` in the API), never a traceback and never silent acceptance,
and it never loses or damages what a run already wrote.

A case is (command line or API call, expected exit status or exception class, a fragment of the message). Pretraining
cases run the repository's tiny config on a corpus prepared once per module, for at most a couple of steps.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from gpt2core.errors import (
    CheckpointCorrupt,
    CheckpointError,
    ConfigError,
    GPT2SuiteError,
    ModelConfigError,
    ModelInputError,
    TrainingDiverged,
)
from gpt2core.config import GPT2Config
from gpt2core.devices import check_device
from gpt2core.model import GPT2LMModel
from tasks.cli.main import main
from tasks.data.registry import get_task
from tasks.errors import MethodError, TaskError

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "pretrain" / "tiny.yaml")
NON_UTF8 = b"caf\xe9".decode("utf-8", "surrogateescape")  # what Python makes of a Latin-1 byte in argv
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch that sees no CUDA device")


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def corpus_cache(tmp_path_factory, shared_data, one_thread) -> Path:
    """The tiny config's corpus, prepared once (tokenizer of 512 tokens) in a cache folder of this module."""
    cache = tmp_path_factory.mktemp("corpus_cache")
    assert main(["pretrain", "--config", TINY, "--prepare-only", "--no-progress",
                 "--set", f"corpus.cache_dir={cache}"]) == 0
    return cache


def _pretrain_args(cache: Path, out: Path) -> list[str]:
    return ["pretrain", "--config", TINY, "--out", str(out), "--no-progress", "--set", f"corpus.cache_dir={cache}",
            "--set", "ppl_eval=[]", "--set", "eval_iters=1", "--set", "checkpoint_interval=1",
            "--set", "log_interval=1"]


@pytest.fixture(scope="module")
def tiny_run(corpus_cache, tmp_path_factory) -> Path:
    """A finished 2-step run of the tiny config: checkpoints step_000001 and step_000002, model/, summary.json."""
    out = tmp_path_factory.mktemp("tiny_run") / "run"
    assert main(_pretrain_args(corpus_cache, out) + ["--max-steps", "2"]) == 0
    return out


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _drop_tensor(folder: Path, name: str = "transformer.h.0.attn.c_attn.weight") -> None:
    f = folder / "model.safetensors"
    sd = load_file(f)
    del sd[name]
    save_file(sd, f, metadata={"format": "pt"})


def _nan_weights(folder: Path) -> None:
    f = folder / "model.safetensors"
    save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(f).items()}, f, metadata={"format": "pt"})


def _truncate(folder: Path) -> None:
    f = folder / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])


# ---------------------------------------------------------------------------------------------- the command line


@dataclass
class Cli:
    """`gpt2suite ARGV` exits with `code` and prints one stderr line containing `fragment`. Tokens of `argv` are
    formatted with the context (`{backbone}`, `{tmp}`, `{run}`, ...; `{pretrain}` expands to a tiny pretraining
    command line); `setup(ctx)` prepares files or the environment first, `after(ctx)` checks what is left."""

    id: str
    argv: list[str]
    fragment: str
    code: int = 2
    setup: Callable[[Any], None] | None = None
    after: Callable[[Any], None] | None = None
    marks: tuple = ()
    needs_backbone: bool = False  # for a setup that copies it

    def fixtures(self) -> list[str]:
        line = " ".join(self.argv)
        names = []
        if self.needs_backbone or "{backbone}" in line:
            names.append("tiny_backbone")
        if "{pretrain}" in line:
            names.append("corpus_cache")
        if "{run}" in line:
            names.append("tiny_run")
        return names


def _with_run(ctx: Any) -> None:
    ctx.run = _copy(ctx.tiny_run, ctx.tmp / "run")
    ctx.before = _digest(ctx.run)


def _run_untouched(ctx: Any) -> None:
    assert _digest(ctx.run) == ctx.before  # nothing a run wrote is lost or changed by a refused command


def _corrupt_every_checkpoint(ctx: Any) -> None:
    _with_run(ctx)
    _truncate(ctx.run / "checkpoints" / "step_000002")
    _drop_tensor(ctx.run / "checkpoints" / "step_000001")
    ctx.before = _digest(ctx.run)


def _model_copy(damage: Callable[[Path], None]) -> Callable[[Any], None]:
    def setup(ctx: Any) -> None:
        damage(_copy(ctx.backbone, ctx.tmp / "broken"))

    return setup


def _write(name: str, text: str) -> Callable[[Any], None]:
    def setup(ctx: Any) -> None:
        (ctx.tmp / name).write_text(text)

    return setup


def _spec_without_validation(ctx: Any) -> None:
    data = yaml.safe_load((REPO / "tasks" / "specs" / "sst2.yaml").read_text())
    data["splits"] = {k: v for k, v in data["splits"].items() if k != "validation"}
    if data.get("eval_split") == "validation":
        data["eval_split"] = "train"
    data["name"] = "sst2-noval"
    (ctx.tmp / "specs").mkdir()
    (ctx.tmp / "specs" / "sst2-noval.yaml").write_text(yaml.safe_dump(data))
    ctx.monkeypatch.setenv("GPT2SUITE_TASK_PATH", str(ctx.tmp / "specs"))


def _no_output(*names: str) -> Callable[[Any], None]:
    def after(ctx: Any) -> None:
        for name in names:
            assert not (ctx.tmp / name).exists(), name

    return after


GEN = ["generate", "--model", "{backbone}"]
FT = ["finetune", "--task", "sst2", "--model", "{backbone}", "--out", "{tmp}/ft", "--runs-dir", "{tmp}/runs"]

CLI_CASES = [
    # generate
    Cli("generate-unknown-model-offline", ["generate", "--model", "nonexistent-model"],
        "neither a model folder here nor a Hugging Face model in the local cache"),
    Cli("generate-missing-folder", ["generate", "--model", "{tmp}/no/such/model"], "does not exist"),
    Cli("generate-folder-without-config", ["generate", "--model", "{tmp}"], "has no config.json"),
    Cli("generate-truncated-weights", GEN[:2] + ["{tmp}/broken"], "truncated or corrupt",
        setup=_model_copy(_truncate), needs_backbone=True),
    Cli("generate-missing-tensor", GEN[:2] + ["{tmp}/broken"], "lack 1 of the model's tensors "
        "(transformer.h.0.attn.c_attn.weight)", setup=_model_copy(_drop_tensor), needs_backbone=True),
    Cli("generate-nan-weights", GEN[:2] + ["{tmp}/broken"], "hold NaN or inf values",
        setup=_model_copy(_nan_weights), needs_backbone=True),
    # convert
    Cli("convert-out-exists", ["convert", "--model", "{backbone}", "--out", "{tmp}"], "exists; pass --overwrite",
        needs_backbone=True),
    Cli("convert-missing-model", ["convert", "--model", "{tmp}/no/such/model", "--out", "{tmp}/out"],
        "does not exist", after=_no_output("out")),
    Cli("generate-negative-max-new-tokens", GEN + ["--max-new-tokens", "-5"], "max_new_tokens must be"),
    Cli("generate-negative-top-k", GEN + ["--top-k", "-5"], "top_k must be 0 (no top-k cut) or more"),
    Cli("generate-negative-temperature", GEN + ["--temperature", "-1"], "temperature must be 0 (greedy)"),
    Cli("generate-nan-temperature", GEN + ["--temperature", "nan"], "got nan"),
    Cli("generate-top-p-zero", GEN + ["--top-p", "0"], "top_p must lie in (0, 1]"),
    Cli("generate-prompt-too-long", GEN + ["--prompt", "the king " * 400], "exceeds n_positions=512"),
    Cli("generate-cuda-on-cpu-torch", GEN + ["--device", "cuda"], "--device 'cuda'", marks=(NO_CUDA,)),
    Cli("generate-unknown-device", GEN + ["--device", "tpu9"], "--device 'tpu9' is not a device name"),
    Cli("generate-non-utf8-prompt", GEN + ["--prompt", NON_UTF8], "--prompt is not valid UTF-8"),
    Cli("generate-not-a-number", GEN + ["--max-new-tokens", "ten"], "invalid int value: 'ten'"),
    Cli("generate-without-model", ["generate"], "the following arguments are required: --model"),
    Cli("unknown-command", ["pretrian"], "invalid choice: 'pretrian'"),
    # tokenizer
    Cli("tokenizer-missing-file", ["tokenizer", "train", "{tmp}/nope.txt", "--vocab-size", "300", "--out", "{tmp}/t"],
        "nope.txt does not exist", after=_no_output("t")),
    Cli("tokenizer-vocab-too-small", ["tokenizer", "train", TINY, "--vocab-size", "10", "--out", "{tmp}/t"],
        "needs at least 257"),
    # pretrain: the config
    Cli("pretrain-missing-config", ["pretrain", "--config", "{tmp}/nope.yaml"], "nope.yaml does not exist"),
    Cli("pretrain-unknown-key", ["{pretrain}", "--set", "lerning_rate=1"], "unknown key 'lerning_rate'"),
    Cli("pretrain-misspelt-parallelism", ["{pretrain}", "--set", "parallelism=fdsp"], "Did you mean 'fsdp'"),
    Cli("pretrain-fsdp-without-torchrun", ["{pretrain}", "--set", "parallelism=fsdp"], "torchrun"),
    Cli("pretrain-unknown-model-key", ["{pretrain}", "--set", "model.n_layers=3"], "did you mean 'n_layer'"),
    Cli("pretrain-unknown-preset", ["{pretrain}", "--set", "preset=gpt3"], "unknown preset 'gpt3'"),
    Cli("pretrain-set-without-value", ["{pretrain}", "--set", "max_steps"], "expected KEY=VALUE"),
    Cli("pretrain-nan-min-lr", ["{pretrain}", "--set", "min_lr=nan"], "min_lr: expected a finite number"),
    Cli("pretrain-inf-lr", ["{pretrain}", "--set", "lr=.inf"], "lr: expected a finite number"),
    Cli("pretrain-nan-dropout", ["{pretrain}", "--set", "model.resid_pdrop=.nan"], "model.resid_pdrop: expected a "
        "finite number"),
    Cli("pretrain-min-lr-above-lr", ["{pretrain}", "--set", "min_lr=1.0"], "min_lr: must lie in [0, lr="),
    Cli("pretrain-bad-betas", ["{pretrain}", "--set", "betas=[0.9, 1.5]"], "betas: each must lie in [0, 1)"),
    Cli("pretrain-zero-max-steps", ["{pretrain}", "--max-steps", "0"], "max_steps: must be at least 1",
        after=_no_output("out")),
    Cli("pretrain-zero-max-tokens", ["{pretrain}", "--max-tokens", "0"], "max_tokens: must be at least 1"),
    Cli("pretrain-seq-len-too-long", ["{pretrain}", "--set", "seq_len=4096"], "n_positions=256"),
    Cli("pretrain-unknown-device", ["{pretrain}", "--device", "tpu"], "device: 'tpu' is not one of"),
    Cli("pretrain-cuda-on-cpu-torch", ["{pretrain}", "--device", "cuda"], "device: cuda", marks=(NO_CUDA,)),
    Cli("pretrain-export-without-prepare", ["{pretrain}", "--export-shards", "{tmp}/x"], "goes with --prepare-only"),
    Cli("pretrain-missing-ppl-eval-file", ["{pretrain}", "--max-steps", "1", "--set", "ppl_eval=[{tmp}/nope.txt]"],
        "ppl_eval: {tmp}/nope.txt", after=_no_output("out")),
    # pretrain: where it starts from
    Cli("pretrain-init-from-missing", ["{pretrain}", "--init-from", "{tmp}/nothing"], "is not a folder"),
    Cli("pretrain-init-from-other-vocabulary", ["{pretrain}", "--max-steps", "1", "--init-from", "{backbone}"],
        "vocabulary of 1024 tokens, the model 512", after=_no_output("out/model", "out/checkpoints")),
    Cli("pretrain-resume-other-vocabulary", ["{pretrain}", "--out", "{run}", "--resume", "--max-steps", "3",
                                             "--set", "model.vocab_size=640"],
        "vocabulary of 512 tokens, the model 640", setup=_with_run, after=_run_untouched),
    Cli("pretrain-existing-run-without-resume", ["{pretrain}", "--out", "{run}", "--max-steps", "3"],
        "pass --resume to continue", setup=_with_run, after=_run_untouched),
    Cli("pretrain-resume-every-checkpoint-corrupt", ["{pretrain}", "--out", "{run}", "--resume", "--max-steps", "3"],
        "can be resumed from (step_000002: weights file", code=1, setup=_corrupt_every_checkpoint,
        after=_run_untouched),
    # fewshot, baseline, perplexity
    Cli("fewshot-unknown-task", ["fewshot", "--task", "sst3", "--model", "dummy"], "unknown task 'sst3'. Did you mean "
        "'sst2'"),
    Cli("fewshot-bad-task-path", ["fewshot", "--task", "trec", "--model", "dummy"], "does not exist (check "
        "GPT2SUITE_TASK_PATH)", setup=lambda ctx: ctx.monkeypatch.setenv("GPT2SUITE_TASK_PATH", str(ctx.tmp / "no"))),
    Cli("fewshot-calibrate-not-classification", ["fewshot", "--task", "squad", "--calibrate", "--model", "dummy"],
        "classification tasks only"),
    Cli("fewshot-negative-shots", ["fewshot", "--task", "trec", "--shots", "-1", "--model", "dummy"],
        "--shots must be 0 (zero-shot) or more"),
    Cli("fewshot-zero-batch-size", ["fewshot", "--task", "trec", "--model", "dummy", "--batch-size", "0"],
        "--batch-size must be at least 1"),
    Cli("fewshot-zero-limit", ["fewshot", "--task", "trec", "--model", "dummy", "--limit", "0"],
        "--limit must be at least 1, got 0; leave --limit out for every example"),
    Cli("fewshot-unknown-split", ["fewshot", "--task", "trec", "--model", "dummy", "--split", "nosuch"],
        "unknown split 'nosuch'"),
    Cli("fewshot-demo-split-evaluated", ["fewshot", "--task", "trec", "--model", "dummy", "--split", "train"],
        "cannot also be the evaluated split"),
    Cli("fewshot-missing-model-folder", ["fewshot", "--task", "trec", "--model", "{tmp}/nothing", "--runs-dir",
                                         "{tmp}/runs"], "model folder {tmp}/nothing does not exist",
        after=_no_output("runs")),
    Cli("fewshot-cuda-on-cpu-torch", ["fewshot", "--task", "trec", "--model", "{backbone}", "--device", "cuda"],
        "--device 'cuda'", marks=(NO_CUDA,)),
    Cli("baseline-unknown-baseline", ["baseline", "--task", "trec", "--method", "lead3"], "unknown baseline 'lead3'. "
        "Did you mean 'lead-k'"),
    Cli("baseline-does-not-apply", ["baseline", "--task", "squad", "--method", "majority"], "does not apply to squad"),
    Cli("baseline-zero-limit", ["baseline", "--task", "trec", "--limit", "0", "--runs-dir", "{tmp}/runs"],
        "--limit must be at least 1, got 0", after=_no_output("runs")),
    Cli("baseline-negative-limit", ["baseline", "--task", "trec", "--limit", "-1", "--runs-dir", "{tmp}/runs"],
        "--limit must be at least 1, got -1", after=_no_output("runs")),
    Cli("baseline-zero-max-train", ["baseline", "--task", "trec", "--max-train", "0"],
        "--max-train must be at least 1"),
    Cli("perplexity-not-a-text-task", ["perplexity", "--task", "sst2", "--model", "dummy"], "whole documents"),
    Cli("perplexity-zero-stride", ["perplexity", "--model", "dummy", "--stride", "0"], "--stride must be at least 1"),
    Cli("perplexity-zero-max-len", ["perplexity", "--model", "dummy", "--max-len", "0"],
        "--max-len must be at least 1"),
    Cli("perplexity-window-too-long", ["perplexity", "--model", "{backbone}", "--max-len", "100000"],
        "max_len must be in [1, 512]"),
    # finetune, eval
    Cli("finetune-unknown-method", FT + ["--method", "lorra"], "unknown method 'lorra'. Did you mean 'lora'"),
    Cli("finetune-method-does-not-apply", ["finetune", "--task", "wikitext2", "--method", "full", "--model",
                                           "{backbone}"], "does not apply to 'wikitext2'"),
    Cli("finetune-unknown-config-key", FT + ["--method", "full", "--config", "{tmp}/bad.yaml"],
        "unknown key 'learning_rate'", setup=_write("bad.yaml", "lr: 1.0e-3\nlearning_rate: 2\n"),
        after=_no_output("ft", "runs")),
    Cli("finetune-missing-config", FT + ["--method", "full", "--config", "{tmp}/nope.yaml"],
        "nope.yaml does not exist"),
    Cli("finetune-set-without-value", FT + ["--method", "full", "--set", "lr"], "expected KEY=VALUE"),
    Cli("finetune-set-unknown-key", FT + ["--method", "full", "--set", "epoch=1"], "Did you mean 'epochs'"),
    Cli("finetune-set-other-method-key", FT + ["--method", "linear", "--set", "r=4"], "'r' is a lora setting"),
    Cli("finetune-set-nan", FT + ["--method", "full", "--set", "lr=nan"], "lr: expected a finite number"),
    Cli("finetune-zero-max-steps", FT + ["--method", "full", "--max-steps", "0"], "--max-steps must be at least 1",
        after=_no_output("ft", "runs")),
    Cli("finetune-zero-epochs", FT + ["--method", "full", "--epochs", "0"], "--epochs must be above 0"),
    Cli("finetune-missing-model", ["finetune", "--task", "sst2", "--method", "full", "--model", "{tmp}/nothing",
                                   "--out", "{tmp}/ft"], "{tmp}/nothing", after=_no_output("ft")),
    Cli("finetune-spec-without-validation", ["finetune", "--task", "sst2-noval", "--method", "full", "--model",
                                             "{backbone}", "--out", "{tmp}/ft", "--runs-dir", "{tmp}/runs"],
        "has no 'validation' split", setup=_spec_without_validation, after=_no_output("ft", "runs")),
    Cli("eval-backbone-without-head", ["eval", "--task", "sst2", "--model", "{backbone}"], "no classification head"),
    Cli("eval-unknown-split", ["eval", "--task", "sst2", "--model", "{backbone}", "--split", "nosuch"],
        "unknown split 'nosuch'"),
    Cli("eval-unknown-task", ["eval", "--task", "trek", "--model", "{backbone}"], "Did you mean 'trec'"),
    Cli("eval-missing-model", ["eval", "--task", "sst2", "--model", "{tmp}/nothing"], "{tmp}/nothing does not exist"),
    Cli("eval-zero-limit", ["eval", "--task", "sst2", "--model", "{backbone}", "--limit", "0"],
        "--limit must be at least 1"),
    Cli("eval-cuda-on-cpu-torch", ["eval", "--task", "sst2", "--model", "{backbone}", "--device", "cuda"],
        "--device 'cuda'", marks=(NO_CUDA,)),
    # leaderboard
    Cli("leaderboard-missing-config", ["leaderboard", "--config", "{tmp}/missing.yaml"], "missing.yaml does not exist"),
    Cli("leaderboard-unknown-task", ["leaderboard", "--config", "{tmp}/lb.yaml", "--out", "{tmp}/lb"],
        "unknown task 'trek'. Did you mean 'trec'", after=_no_output("lb"),
        setup=_write("lb.yaml", "models: {d: dummy}\ntasks: [trek]\nmethods: [zero-shot]\n")),
    Cli("leaderboard-missing-model-folder", ["leaderboard", "--config", "{tmp}/lb.yaml", "--out", "{tmp}/lb"],
        "is not a model folder", setup=_write("lb.yaml", "models: {m: /no/such/model}\ntasks: [trec]\n"
                                                          "methods: [zero-shot]\n")),
    Cli("leaderboard-extends-missing-file", ["leaderboard", "--config", "{tmp}/lb.yaml", "--dry-run"],
        "extends: 'base.yaml' is not a file beside it", setup=_write("lb.yaml", "extends: base.yaml\n")),
    Cli("leaderboard-extends-itself", ["leaderboard", "--config", "{tmp}/lb.yaml", "--dry-run"],
        "leads back to itself", setup=_write("lb.yaml", "extends: lb.yaml\ntasks: [trec]\n")),
]


def _expand(argv: list[str], ctx: Any) -> list[str]:
    out: list[str] = []
    for token in argv:
        if token == "{pretrain}":
            out += _pretrain_args(ctx.corpus_cache, ctx.tmp / "out")
        else:
            out.append(token.format(**vars(ctx)) if "{" in token else token)
    return out


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CLI_CASES])
def test_command_line_bad_input(case: Cli, request, tmp_path, monkeypatch, capsys, one_thread):
    ctx = SimpleNamespace(tmp=tmp_path, monkeypatch=monkeypatch, run=tmp_path / "run")
    for name in case.fixtures():  # only what the case uses: most cases need no model and no pretraining run
        setattr(ctx, "backbone" if name == "tiny_backbone" else name, request.getfixturevalue(name))
    monkeypatch.chdir(tmp_path)  # records a command would write by default go here, not into the repository
    if case.setup:
        case.setup(ctx)
    argv = _expand(case.argv, ctx)
    capsys.readouterr()
    assert main(argv) == case.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gpt2suite") and ": error: " in lines[0], lines[0]
    assert case.fragment.format(**vars(ctx)) in lines[0], lines[0]
    if case.after:
        case.after(ctx)


def test_the_catalogue_is_long_enough():
    assert len(CLI_CASES) + len(API_CASES) >= 50
    assert len({c.id for c in CLI_CASES}) == len(CLI_CASES) and len({c.id for c in API_CASES}) == len(API_CASES)


def test_non_utf8_argument_from_a_real_command_line(tmp_path):
    """The bytes a shell in a Latin-1 locale passes: Python decodes them with surrogateescape."""
    cmd = [sys.executable, "-m", "tasks.cli.main", "generate", "--model", str(tmp_path), "--prompt", NON_UTF8]
    proc = subprocess.run(cmd, capture_output=True, cwd=REPO, timeout=120)
    err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "--prompt is not valid UTF-8" in err[0], err


# ---------------------------------------------------------------------------------------------- the API


@dataclass
class Api:
    id: str
    call: Callable[[Any], Any]
    error: type[Exception]
    fragment: str


@pytest.fixture(scope="module")
def api_ctx(tmp_path_factory, one_thread) -> Any:
    torch.manual_seed(0)
    model = GPT2LMModel(GPT2Config.from_preset("tiny", vocab_size=100, n_positions=32)).eval()
    folder = tmp_path_factory.mktemp("api_model")
    model.save_pretrained(folder)
    return SimpleNamespace(model=model, folder=folder, tmp=tmp_path_factory.mktemp("api"),
                           ids=torch.tensor([[1, 2, 3]]))


def _damaged(ctx: Any, damage: Callable[[Path], None]) -> Path:
    dest = ctx.tmp / damage.__name__
    if not dest.exists():
        damage(_copy(ctx.folder, dest))
    return dest


def _load(*args: Any, **kwargs: Any) -> Any:
    from gpt2core.checkpoint import load_model

    return load_model(*args, **kwargs)


def _pretrain_config(**over: Any) -> Any:
    from gpt2core.pretrain.config import load_config

    return load_config(TINY, over)


def _baseline(limit: int) -> Any:
    from tasks.methods.baselines import run_baseline

    rows = [{"id": str(i), "text": "a question", "label": 0} for i in range(3)]
    return run_baseline(get_task("trec"), "majority", limit=limit, train_rows=rows, eval_rows=rows)


def _forward(**kwargs: Any) -> Callable[[Any], Any]:
    return lambda ctx: ctx.model(**{k: (v(ctx) if callable(v) else v) for k, v in kwargs.items()})


def _generate(input_ids: torch.Tensor | None = None, **kwargs: Any) -> Callable[[Any], Any]:
    kwargs = {"max_new_tokens": 4, **kwargs}
    return lambda ctx: ctx.model.generate(ctx.ids if input_ids is None else input_ids, **kwargs)


API_CASES = [
    Api("forward-1d-input-ids", _forward(input_ids=torch.tensor([1, 2, 3])), ModelInputError,
        "input_ids must be 2-D (batch, tokens), got shape [3]; add a batch dimension"),
    Api("forward-float-input-ids", _forward(input_ids=torch.ones(1, 3)), ModelInputError, "integer token ids"),
    Api("forward-ids-outside-vocabulary", _forward(input_ids=torch.tensor([[1, 100]])), ModelInputError,
        "token ids must lie in [0, 100)"),
    Api("forward-too-long", _forward(input_ids=torch.zeros(1, 33, dtype=torch.long)), ModelInputError,
        "exceeds the model's n_positions=32"),
    Api("forward-position-ids-past-n-positions", _forward(input_ids=lambda c: c.ids,
                                                          position_ids=torch.tensor([[0, 1, 32]])),
        ModelInputError, "position_ids must lie in [0, 32)"),
    Api("forward-negative-position-ids", _forward(input_ids=lambda c: c.ids, position_ids=torch.tensor([[-1, 0, 1]])),
        ModelInputError, "got min -1"),
    Api("forward-position-ids-shape", _forward(input_ids=lambda c: c.ids, position_ids=torch.tensor([[0, 1]])),
        ModelInputError, "position_ids must be (batch=1, tokens=3)"),
    Api("forward-attention-mask-longer", _forward(input_ids=lambda c: c.ids, attention_mask=torch.ones(1, 5)),
        ModelInputError, "attention_mask must be (batch=1, past + tokens=3)"),
    Api("forward-attention-mask-shorter-with-padding", _forward(input_ids=lambda c: c.ids,
                                                                attention_mask=torch.tensor([[0, 1]])),
        ModelInputError, "got shape [1, 2]"),
    Api("forward-labels-shape", _forward(input_ids=lambda c: c.ids, labels=torch.ones(1, 5, dtype=torch.long)),
        ModelInputError, "labels must have the shape of the input, [1, 3]"),
    Api("forward-targets-shape", _forward(input_ids=lambda c: c.ids, targets=torch.ones(1, 2, dtype=torch.long)),
        ModelInputError, "targets must have the shape of the input, [1, 3]"),
    Api("forward-inputs-embeds-shape", _forward(inputs_embeds=torch.ones(3, 64)), ModelInputError,
        "inputs_embeds must be (batch, tokens, n_embd=64)"),
    Api("forward-ids-and-embeds", _forward(input_ids=lambda c: c.ids, inputs_embeds=torch.ones(1, 3, 64)),
        ModelInputError, "exactly one of input_ids or inputs_embeds"),
    Api("generate-negative-max-new-tokens", _generate(max_new_tokens=-1), ModelInputError,
        "max_new_tokens must be a whole number, 0 or more, got -1"),
    Api("generate-negative-max-new-tokens-beam-search", _generate(max_new_tokens=-1, num_beams=2), ModelInputError,
        "max_new_tokens must be"),
    Api("generate-negative-temperature", _generate(do_sample=True, temperature=-0.5), ModelInputError,
        "temperature must be 0 (greedy) or a finite positive number, got -0.5"),
    Api("generate-nan-temperature", _generate(do_sample=True, temperature=float("nan")), ModelInputError, "got nan"),
    Api("generate-negative-top-k", _generate(do_sample=True, top_k=-1), ModelInputError, "top_k must be 0"),
    Api("generate-top-p-above-one", _generate(do_sample=True, top_p=1.5), ModelInputError, "top_p must lie in (0, 1]"),
    Api("generate-empty-prompt", _generate(input_ids=torch.zeros(1, 0, dtype=torch.long)), ModelInputError,
        "at least one token"),
    Api("generate-past-n-positions", _generate(max_new_tokens=40), ModelInputError, "exceeds n_positions=32"),
    Api("generate-stop-strings-without-tokenizer", _generate(stop_strings=["."]), ModelInputError,
        "pass tokenizer="),
    Api("generate-attention-mask-shape", _generate(attention_mask=torch.tensor([[0, 1, 1, 1]])), ModelInputError,
        "attention_mask must have the shape of input_ids, [1, 3]"),
    Api("load-missing-tensor", lambda ctx: _load(_damaged(ctx, _drop_tensor)), CheckpointError,
        "lack 1 of the model's tensors (transformer.h.0.attn.c_attn.weight)"),
    Api("from-pretrained-missing-tensor", lambda ctx: GPT2LMModel.from_pretrained(_damaged(ctx, _drop_tensor)),
        CheckpointError, "lack 1 of the model's tensors (transformer.h.0.attn.c_attn.weight)"),
    Api("load-nan-weights", lambda ctx: _load(_damaged(ctx, _nan_weights)), CheckpointError, "hold NaN or inf values"),
    Api("load-truncated-weights", lambda ctx: _load(_damaged(ctx, _truncate)), CheckpointError, "truncated or corrupt"),
    Api("load-unknown-hub-name-offline", lambda ctx: _load("nonexistent-model"), CheckpointError,
        "neither a model folder here nor a Hugging Face model in the local cache"),
    Api("load-on-a-missing-device", lambda ctx: _load(ctx.folder, device="cuda" if not torch.cuda.is_available()
                                                      else f"cuda:{torch.cuda.device_count()}"),
        ConfigError, "--device 'cuda"),
    Api("config-heads-do-not-divide", lambda ctx: GPT2Config(n_embd=64, n_head=3), ModelConfigError,
        "must be divisible by n_head"),
    Api("config-unknown-preset", lambda ctx: GPT2Config.from_preset("gpt2-smal"), ModelConfigError,
        "unknown preset 'gpt2-smal'. Did you mean"),
    Api("pretrain-config-nan-min-lr", lambda ctx: _pretrain_config(min_lr=float("nan")), ConfigError,
        "min_lr: expected a finite number"),
    Api("pretrain-config-inf-grad-clip", lambda ctx: _pretrain_config(grad_clip=float("inf")), ConfigError,
        "grad_clip: expected a finite number"),
    Api("pretrain-config-zero-max-steps", lambda ctx: _pretrain_config(max_steps=0), ConfigError,
        "max_steps: must be at least 1"),
    Api("baseline-limit-zero", lambda ctx: _baseline(0), MethodError, "limit must be >= 1"),
    Api("baseline-limit-negative", lambda ctx: _baseline(-1), MethodError, "limit must be >= 1"),
    Api("unknown-task", lambda ctx: get_task("sst3"), TaskError, "unknown task 'sst3'. Did you mean 'sst2'"),
    Api("unknown-device-name", lambda ctx: check_device("gpu"), ConfigError, "'gpu' is not a device name"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in API_CASES])
def test_api_bad_input(case: Api, api_ctx):
    with pytest.raises(case.error) as info:
        case.call(api_ctx)
    assert isinstance(info.value, GPT2SuiteError)
    assert case.fragment in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- runs keep their results


def _train(cache: Path, out: Path, resume: bool = False, **over: Any) -> dict[str, Any]:
    """`train` on the tiny config; the summary gets the lines it logged under "log"."""
    from gpt2core.pretrain.loop import train

    cfg = _pretrain_config(**{"corpus.cache_dir": str(cache), "out_dir": str(out), "ppl_eval": [], "eval_iters": 1,
                              "checkpoint_interval": 1, "log_interval": 1, "progress": False, **over})
    lines: list[str] = []
    summary = train(cfg, resume=resume, log=lines.append)
    summary["log"] = lines
    return summary


@pytest.mark.parametrize("damage", [_truncate, _drop_tensor, _nan_weights], ids=lambda f: f.__name__.strip("_"))
def test_resume_falls_back_past_a_corrupt_latest_checkpoint(damage, tiny_run, corpus_cache, tmp_path, one_thread):
    run = _copy(tiny_run, tmp_path / "run")
    damage(run / "checkpoints" / "step_000002")
    summary = _train(corpus_cache, run, resume=True, max_steps=3)
    lines = summary["log"]
    fallback = [line for line in lines if "falling back" in line]
    assert len(fallback) == 1 and "step_000002 is corrupt" in fallback[0] and "step_000001" in fallback[0], lines
    assert any("resumed from" in line and line.rstrip().endswith("(1,024 tokens)") for line in lines), lines
    assert summary["step"] == 3
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == [1, 2, 3]  # the lost step 2 was trained again, once
    from gpt2core.checkpoint import load_model

    load_model(run / "checkpoints" / "step_000002")  # rewritten, whole


def test_nan_weights_are_never_checkpointed_nor_called_good(corpus_cache, tmp_path, monkeypatch, one_thread):
    from gpt2core.pretrain.checkpoints import list_checkpoints
    from gpt2core.pretrain.loop import Trainer

    step = Trainer._train_step

    def poisoned(self: Trainer, model: Any, lr: float) -> Any:
        out = step(self, model, lr)
        if self.state.step == 1:  # the update of step 2 leaves NaN weights behind a finite loss
            with torch.no_grad():
                self.raw_model.transformer.ln_f.weight.fill_(float("nan"))
        return out

    monkeypatch.setattr(Trainer, "_train_step", poisoned)
    with pytest.raises(TrainingDiverged) as info:
        _train(corpus_cache, tmp_path / "run", max_steps=4)
    message = str(info.value)
    assert "weights hold NaN or inf after step 2" in message and "no checkpoint was written for it" in message
    assert f"the last good checkpoint is {tmp_path / 'run' / 'checkpoints' / 'step_000001'};" in message
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_000001"]
    assert not (tmp_path / "run" / "model").exists()


def test_the_final_model_folder_appears_whole_or_not_at_all(corpus_cache, tmp_path, monkeypatch, one_thread):
    """A kill after the weights but before the tokenizer and summary are written leaves no model folder; the next
    start removes the temporaries such kills leave, and leaves everything else alone."""
    from gpt2core.pretrain import loop

    def killed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "write_summary", killed)
    with pytest.raises(KeyboardInterrupt):
        _train(corpus_cache, tmp_path / "run", max_steps=1)
    run = tmp_path / "run"
    assert not (run / "model").exists() and not (run / "summary.json").exists()
    monkeypatch.undo()

    # what a kill -9 leaves: atomic writers' temporaries (old and new names); a foreign hidden folder stays
    (run / ".model.k3j4h2a1.tmp").mkdir()
    (run / ".model.k3j4h2a1.tmp" / "model.safetensors").write_bytes(b"half")
    (run / ".model.old").mkdir()
    (run / ".summary.json.x8d7.tmp").write_text("{")
    (run / "checkpoints" / ".step_000002.abcd1234").mkdir()
    (run / ".staging").mkdir()
    summary = _train(corpus_cache, run, max_steps=2, resume=True)
    assert any("removed 4 half-written temporaries" in line for line in summary["log"]), summary["log"]
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [".staging"]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    model = run / "model"
    assert {"model.safetensors", "config.json", "tokenizer.json", "summary.json"} <= {p.name for p in model.iterdir()}
    assert json.loads((model / "summary.json").read_text())["step"] == 2


def test_init_from_a_checkpoint_of_another_vocabulary_is_refused_in_the_api(tiny_backbone, corpus_cache, tmp_path,
                                                                              one_thread):
    from gpt2core.pretrain.loop import train

    cfg = _pretrain_config(**{"corpus.cache_dir": str(corpus_cache), "out_dir": str(tmp_path / "out"),
                              "ppl_eval": [], "progress": False})
    with pytest.raises(CheckpointError, match="vocabulary of 1024 tokens, the model 512") as info:
        train(cfg, init_from=tiny_backbone, log=lambda *_: None)
    assert "--set corpus.tokenizer.path=" in str(info.value)
    assert not isinstance(info.value, CheckpointCorrupt)  # another model, not a damaged one: no fallback
    assert not (tmp_path / "out" / "checkpoints").exists()


# ---------------------------------------------------------------------------------------------- generation decoding


def _generation_spec_with(**generation: Any) -> Callable[[Any], None]:
    """A user's copy of a generation task's spec (in GPT2SUITE_TASK_PATH, so it wins) with these `generation:` keys."""

    def setup(ctx: Any) -> None:
        data = yaml.safe_load((REPO / "tasks" / "specs" / "multi30k-en-de.yaml").read_text())
        data["generation"] = {**data["generation"], **generation}
        (ctx.tmp / "specs").mkdir()
        (ctx.tmp / "specs" / "multi30k-en-de.yaml").write_text(yaml.safe_dump(data))
        ctx.monkeypatch.setenv("GPT2SUITE_TASK_PATH", str(ctx.tmp / "specs"))

    return setup


FEWSHOT_ENDE = ["fewshot", "--task", "multi30k-en-de", "--model", "dummy"]
DECODING_CLI_CASES = [
    Cli("spec-zero-beams", FEWSHOT_ENDE, "generation.num_beams must be a whole number, 1 (greedy) or more, got 0",
        setup=_generation_spec_with(num_beams=0)),
    Cli("spec-negative-ngram-guard", FEWSHOT_ENDE, "generation.no_repeat_ngram_size must be a whole number, 0 (no "
        "guard) or more, got -1", setup=_generation_spec_with(no_repeat_ngram_size=-1)),
    Cli("spec-zero-repetition-penalty", FEWSHOT_ENDE, "generation.repetition_penalty must be a finite number above 0",
        setup=_generation_spec_with(repetition_penalty=0.0)),
    Cli("spec-misspelt-decoding-key", FEWSHOT_ENDE, "unknown key 'generation.num_beam'; did you mean 'num_beams'",
        setup=_generation_spec_with(num_beam=4)),
]
CLI_CASES += DECODING_CLI_CASES  # counted by the catalogue's length check; run by the test below


def _predict_with(**settings: Any) -> Callable[[Any], Any]:
    def call(ctx: Any) -> Any:
        from tasks.evaluation.predict import PredictSettings, decoding

        return decoding(get_task("multi30k-en-de"), PredictSettings(**settings))

    return call


DECODING_API_CASES = [
    Api("predict-zero-beams", _predict_with(num_beams=0), TaskError, "num_beams must be a whole number, 1 (greedy)"),
    Api("predict-negative-ngram-guard", _predict_with(no_repeat_ngram_size=-2), TaskError,
        "no_repeat_ngram_size must be a whole number, 0 (no guard) or more, got -2"),
    Api("predict-nan-length-penalty", _predict_with(length_penalty=float("nan")), TaskError,
        "length_penalty must be a finite number"),
    Api("generate-negative-ngram-guard", _generate(no_repeat_ngram_size=-1), ModelInputError,
        "no_repeat_ngram_size must be 0 (no guard) or more"),
    Api("generate-zero-repetition-penalty", _generate(repetition_penalty=0.0), ModelInputError,
        "repetition_penalty must be a finite positive number"),
]
API_CASES += DECODING_API_CASES


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in DECODING_CLI_CASES])
def test_command_line_bad_decoding(case: Cli, request, tmp_path, monkeypatch, capsys, one_thread):
    test_command_line_bad_input(case, request, tmp_path, monkeypatch, capsys, one_thread)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in DECODING_API_CASES])
def test_api_bad_decoding(case: Api, api_ctx):
    test_api_bad_input(case, api_ctx)
