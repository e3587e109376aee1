"""Pretraining: corpus preparation and caching, bit-exact resume, DDP equivalence, bad inputs, perplexity."""

import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2core.errors import CorpusError
from gpt2core.hashing import share_position
from gpt2core.pretrain import corpus as corpus_mod
from gpt2core.pretrain.config import ConfigError, config_from_dict, load_config
from gpt2core.pretrain.corpus import iter_documents, prepare_corpus
from gpt2core.pretrain.prepared import load_tokens, pack_shards, read_manifest, unpack_shards
from gpt2core.pretrain.evaluate import evaluate_perplexity
from gpt2core.errors import CheckpointCorrupt, TrainingDiverged
from gpt2core.pretrain.checkpoints import list_checkpoints
from gpt2core.pretrain.loop import train
from gpt2core.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _records(out / "metrics.jsonl") if "loss" in r and "event" not in r}


@pytest.fixture(scope="module")
def texts(shared_data, tmp_path_factory) -> Path:
    """A slice of Tiny Shakespeare and a small JSONL of distinct documents."""
    folder = tmp_path_factory.mktemp("texts")
    with gzip.open(shared_data / "corpus" / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8") as f:
        (folder / "shakespeare.txt").write_text(f.read(120_000), encoding="utf-8")
    with gzip.open(folder / "docs.jsonl.gz", "wt", encoding="utf-8") as f:
        for i in range(200):
            f.write(json.dumps({"body": {"en": f"Document number {i} talks about the king and the crown."}}) + "\n")
    return folder


def _cfg_dict(texts: Path, tmp: Path, **top) -> dict:
    d = {
        "preset": "tiny",
        "corpus": {
            "name": "test",
            "sources": [{"path": str(texts / "shakespeare.txt")},
                        {"path": str(texts / "docs.jsonl.gz"), "field": "body.en"}],
            "tokenizer": {"vocab_size": 512},
            "val_every": 20,
            "cache_dir": str(texts / "cache"),
        },
        "seq_len": 32, "micro_batch_size": 4, "grad_accum": 2, "max_steps": 6, "lr": 3e-3, "min_lr": 3e-4,
        "warmup_steps": 2, "lr_decay_steps": 6, "eval_interval": 100, "eval_iters": 2, "log_interval": 1,
        "checkpoint_interval": 100, "keep_last_k": 2, "device": "cpu", "threads": 2, "seed": 7,
        "out_dir": str(tmp / "run"), "progress": False,
    }
    for k, v in top.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    return d


def _cfg(texts: Path, tmp: Path, **top):
    return config_from_dict(_cfg_dict(texts, tmp, **top), "test")


@pytest.fixture(scope="module")
def prepared(texts) -> Path:
    cfg = _cfg(texts, texts)
    return prepare_corpus(cfg.corpus, progress=False, log=lambda *_: None)


# ---------------------------------------------------------------------------------------------- corpus


def test_prepare_writes_shards_and_manifest(prepared, texts):
    m = read_manifest(prepared)
    assert m["dtype"] == "uint16" and m["vocab_size"] == 512 and m["eot_id"] == 511
    train, val = load_tokens(prepared, "train"), load_tokens(prepared, "val")
    assert len(train) == m["tokens"]["train"] > 20_000 and len(val) == m["tokens"]["val"] > 100
    assert train[0] == val[0] == 511  # <|endoftext|> before every document
    # JSONL: every 20th document (1-based) is validation, and never in train
    tok = load_tokenizer(prepared / "tokenizer")
    train_text, val_text = tok.decode(train.tolist()), tok.decode(val.tolist())
    assert "Document number 19 " in val_text and "Document number 19 " not in train_text
    assert "Document number 18 " in train_text and "Document number 18 " not in val_text
    # the text file: its last 1/20 of lines is validation
    lines = (texts / "shakespeare.txt").read_text().splitlines(keepends=True)
    n_val = -(-len(lines) // 20)  # ceil
    tail = "".join(lines[len(lines) - n_val:])
    assert tail in val_text and tail not in train_text
    assert {f["sha256"] for f in m["files"]} and "share_position" in m["keep_rule"]
    assert [s["keep"] for s in m["sources"]] == [None, None]


def test_corpus_cache_hit_and_key_change(prepared, texts, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in prepared.iterdir()}
    messages = []
    again = prepare_corpus(_cfg(texts, texts).corpus, progress=False, log=messages.append)
    assert again == prepared and any("cached" in m for m in messages)
    assert {p.name: p.stat().st_mtime_ns for p in prepared.iterdir()} == before
    # a changed input file gives another cache key
    changed = tmp_path / "shakespeare.txt"
    changed.write_text((texts / "shakespeare.txt").read_text()[:60_000] + "\nA new line.\n")
    cfg = _cfg(texts, tmp_path, corpus={"sources": [{"path": str(changed)}, {"path": str(texts / "docs.jsonl.gz"),
                                                                              "field": "body.en"}]})
    key_new, _ = corpus_mod.corpus_key(cfg.corpus)
    assert key_new != read_manifest(prepared)["key"]


def test_chunked_encoding_matches_whole(texts, prepared, monkeypatch):
    monkeypatch.setattr(corpus_mod, "_CHUNK_CHARS", 500)
    text = (texts / "shakespeare.txt").read_text()[:30_000] + "end  \nWord\n\n  x\nY"
    backend = load_tokenizer(prepared / "tokenizer").backend_tokenizer
    pieces = corpus_mod._chunks(text)
    assert len(pieces) > 10 and "".join(pieces) == text
    chunked = [i for e in backend.encode_batch(pieces, add_special_tokens=False) for i in e.ids]
    assert chunked == backend.encode(text, add_special_tokens=False).ids


def test_pack_unpack_roundtrip(prepared, tmp_path):
    packed = pack_shards(prepared, tmp_path / "shards", log=lambda *_: None)
    assert (packed / "train.bin.xz").stat().st_size < (prepared / "train.bin").stat().st_size
    restored = unpack_shards(packed, tmp_path / "restored")
    for split in ("train", "val"):
        assert (restored / f"{split}.bin").read_bytes() == (prepared / f"{split}.bin").read_bytes()
    data = bytearray((packed / "val.bin.xz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (packed / "val.bin.xz").write_bytes(bytes(data))
    with pytest.raises(CorpusError, match="val.bin.xz"):
        unpack_shards(packed, tmp_path / "again")


def test_keep_rule_carves_disjoint_parts(texts, tmp_path):
    rows = [{"id": f"doc/{i:03d}", "text": f"text {i}"} for i in range(300)]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    parts = []
    for part in range(3):
        cfg = _cfg(texts, tmp_path, corpus={"sources": [
            {"path": str(tmp_path / "r.jsonl"), "keep": {"key": "id", "shares": [0.8, 0.1, 0.1], "part": part}}]})
        parts.append([t for t, _ in iter_documents(cfg.corpus.sources[0], 0, val_every=10_000)])
    assert sum(map(len, parts)) == 300 and len(set().union(*map(set, parts))) == 300
    assert 200 < len(parts[0]) < 280
    bucket = {f"text {i}": share_position(f"doc/{i:03d}", 10) for i in range(300)}
    assert all(bucket[t] < 8 for t in parts[0]) and all(bucket[t] == 9 for t in parts[2])
    with pytest.raises(ConfigError, match=r"keep.shares.*add up to 1"):
        _cfg(texts, tmp_path, corpus={"sources": [{"path": "x.jsonl", "keep": {"shares": [0.8, 0.1]}}]})
    with pytest.raises(ConfigError, match=r"keep.part: 3"):
        _cfg(texts, tmp_path, corpus={"sources": [{"path": "x.jsonl", "keep": {"shares": [0.5, 0.5], "part": 3}}]})


def test_default_corpus_keeps_the_hash_carved_train_ids(shared_data):
    """The keep rule of configs/pretrain/corpus_default.yaml keeps exactly the ids whose
    int(sha256(id)[:8], 16) % 10 < 8: the 80% train part the summarization task carves."""
    import hashlib

    cfg = load_config(REPO / "configs" / "pretrain" / "default.yaml")
    (index, src), = [(i, s) for i, s in enumerate(cfg.corpus.sources) if s.keep is not None]
    with gzip.open(corpus_mod.source_files(src, index)[0], "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    kept = {t for t, _ in iter_documents(src, index, val_every=10**9)}
    expected = {r[src.field] for r in rows if int(hashlib.sha256(r["id"].encode()).hexdigest()[:8], 16) % 10 < 8}
    assert kept == expected and 0.77 < len(kept) / len(rows) < 0.83


# ---------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_is_bit_exact(texts, prepared, tmp_path, optimizer):
    full = train(_cfg(texts, tmp_path, out_dir=str(tmp_path / "full"), optimizer=optimizer), log=lambda *_: None)
    assert full["step"] == 6
    train(_cfg(texts, tmp_path, out_dir=str(tmp_path / "half"), max_steps=3, optimizer=optimizer),
          log=lambda *_: None)
    resumed = train(_cfg(texts, tmp_path, out_dir=str(tmp_path / "half"), optimizer=optimizer), resume=True,
                    log=lambda *_: None)
    assert resumed["step"] == 6
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "half")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    assert a == b  # exact equality at every step
    from safetensors.torch import load_file

    wa = load_file(tmp_path / "full" / "model" / "model.safetensors")
    wb = load_file(tmp_path / "half" / "model" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (tmp_path / "full" / "loss.png").stat().st_size > 1000


def test_resume_with_another_optimizer_says_so(texts, prepared, tmp_path):
    from gpt2core.errors import CheckpointCorrupt, CheckpointError

    out = str(tmp_path / "run")
    train(_cfg(texts, tmp_path, out_dir=out, max_steps=3, optimizer="adamw"), log=lambda *_: None)
    with pytest.raises(CheckpointError, match="trained with `optimizer: adamw` but this run uses `optimizer: muon`") as e:
        train(_cfg(texts, tmp_path, out_dir=out, optimizer="muon"), resume=True, log=lambda *_: None)
    assert not isinstance(e.value, CheckpointCorrupt)  # not damage: no fallback to older checkpoints


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_ddp_matches_single_process(texts, prepared, tmp_path, optimizer):
    # global batch 2 processes x 4 rows x 1 micro-step == 1 process x 4 rows x 2 micro-steps
    single = _cfg_dict(texts, tmp_path, max_steps=3, out_dir=str(tmp_path / "single"),
                       corpus={"prepared_dir": str(prepared)}, optimizer=optimizer)
    train(config_from_dict(single), log=lambda *_: None)
    ddp = {**single, "grad_accum": 1, "out_dir": str(tmp_path / "ddp"), "threads": 1}
    cfg_file = tmp_path / "ddp.yaml"
    cfg_file.write_text(json.dumps(ddp))  # JSON is YAML
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
         "gpt2core.pretrain.cli", "pretrain", "--config", str(cfg_file)],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in a:
        # fp32 relative tolerance: DDP averages gradients in another order than accumulation, and Muon's
        # Newton-Schulz iterations amplify the rounding (1.7e-5 on a loss of 6.04 on an AVX2 machine)
        assert a[step] == pytest.approx(b[step], rel=1e-5), (step, a[step], b[step])
    assert [p.name for p in list_checkpoints(tmp_path / "ddp")] == ["step_000003"]


def test_muon_groups_and_schedule(texts, tmp_path):
    """Muon gets exactly the blocks' matrices; AdamW the tied embedding, wpe, LayerNorms and biases; the schedule
    moves both learning rates by the same factor."""
    from gpt2core.config import GPT2Config
    from gpt2core.model import GPT2LMModel
    from gpt2core.pretrain.optim import lr_at, make_optimizer, set_lr

    cfg = _cfg(texts, tmp_path, optimizer="muon", muon_lr=0.05)
    model = GPT2LMModel(GPT2Config.from_preset("tiny", vocab_size=512))
    opt = make_optimizer(model, cfg, "cpu")
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in opt.muon.param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in opt.adamw.param_groups for p in g["params"]}
    kinds = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    assert muon == {f"transformer.h.{i}.{k}" for i in range(2) for k in kinds}
    assert not muon & adamw and muon | adamw == set(names.values())
    assert "transformer.wte.weight" in adamw and "transformer.wpe.weight" in adamw
    assert model.lm_head.weight is model.transformer.wte.weight  # tied: trained once, by AdamW
    for step in (0, 3, 5):
        set_lr(opt, lr_at(step, cfg, 6))
        adam_lr, muon_lr = opt.adamw.param_groups[0]["lr"], opt.muon.param_groups[0]["lr"]
        assert math.isclose(adam_lr / cfg.lr, muon_lr / cfg.muon_lr)
    with pytest.raises(ConfigError, match=r"optimizer 'moun'.*'muon'"):
        _cfg(texts, tmp_path, optimizer="moun")
    with pytest.raises(ConfigError, match=r"muon_momentum"):
        _cfg(texts, tmp_path, optimizer="muon", muon_momentum=1.5)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(texts, prepared, tmp_path):
    cfg = _cfg(texts, tmp_path, lr=1e30, warmup_steps=0, checkpoint_interval=1, max_steps=6)
    with pytest.raises(TrainingDiverged, match=r"at step (\d+).*last good checkpoint") as err:
        train(cfg, log=lambda *_: None)
    bad_step = int(err.value.args[0].split("at step ")[1].split(";")[0])
    kept = list_checkpoints(tmp_path / "run")
    assert kept and kept[-1].name == f"step_{bad_step - 1:06d}"
    from safetensors.torch import load_file

    weights = load_file(kept[-1] / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert _records(tmp_path / "run" / "metrics.jsonl")[-1]["event"] == "diverged"


def test_corrupt_checkpoint_on_resume(texts, prepared, tmp_path):
    train(_cfg(texts, tmp_path, max_steps=2), log=lambda *_: None)
    weights = list_checkpoints(tmp_path / "run")[-1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointCorrupt, match="model.safetensors.*corrupt"):
        train(_cfg(texts, tmp_path, max_steps=4), resume=True, log=lambda *_: None)
    assert weights.exists() and weights.stat().st_size == 100
    with pytest.raises(ConfigError, match="--resume"):  # an existing run is never silently restarted
        train(_cfg(texts, tmp_path, max_steps=4), log=lambda *_: None)


# ---------------------------------------------------------------------------------------------- bad inputs


def test_missing_and_empty_corpus(texts, tmp_path):
    cfg = _cfg(texts, tmp_path, corpus={"sources": [{"path": str(tmp_path / "nope.txt.gz")}],
                                        "cache_dir": str(tmp_path / "c")})
    with pytest.raises(CorpusError, match="nope.txt.gz"):
        prepare_corpus(cfg.corpus, progress=False, log=lambda *_: None)
    (tmp_path / "empty.txt").write_text("\n  \n")
    cfg = _cfg(texts, tmp_path, corpus={"sources": [{"path": str(tmp_path / "empty.txt")}],
                                        "cache_dir": str(tmp_path / "c")})
    with pytest.raises(CorpusError, match="empty"):
        prepare_corpus(cfg.corpus, progress=False, log=lambda *_: None)
    assert not [p for p in (tmp_path / "c").iterdir() if not p.name.startswith(".")]


def test_config_errors_name_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("preset: tiny\ncorpus: {sources: [{path: x.txt}]}\nlerning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*'lerning_rate'"):
        load_config(f)
    f.write_text("preset: tiny\ncorpus: {sources: [{path: x.txt, feild: text}]}\n")
    with pytest.raises(ConfigError, match=r"corpus.sources\[0\].feild.*did you mean 'field'"):
        load_config(f)
    f.write_text("preset: tiny\ncorpus: {sources: [{path: x.txt}]}\nmax_steps: many\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*max_steps.*integer"):
        load_config(f)
    f.write_text("preset: tiny\ncorpus: {sources: [{path: x.txt}]}\ncompile: 'yes'\n")
    with pytest.raises(ConfigError, match=r"compile.*true or false"):
        load_config(f)
    f.write_text("preset: tiny\ncorpus: {sources: [{path: x.txt}]}\nseq_len: 1024\n")
    with pytest.raises(ConfigError, match=r"seq_len.*n_positions=256"):
        load_config(f)
    f.write_text("preset: tiny\ncorpus: {sources: [{path: x.txt}]}\nmodel: {n_layers: 3}\n")
    with pytest.raises(ConfigError, match=r"model.n_layers.*n_layer"):
        load_config(f)


def test_dtype_and_compile_auto_resolve_by_device(tmp_path):
    """`auto` (the default) is the fast path of the device: bf16 + compile on CUDA, fp32 without compile on CPU;
    an explicit value wins. Pure on the device name, so it runs without a GPU."""
    from gpt2core.pretrain.config import resolved_for

    base = {"preset": "tiny", "corpus": {"sources": [{"path": "x.txt"}]}}
    auto = config_from_dict(base)
    assert (auto.dtype, auto.compile) == ("auto", "auto")
    slow, fast = ("fp32", False), ("bf16", True)
    for device, want in (("cpu", slow), (torch.device("cpu"), slow), ("mps", slow),
                         ("cuda", fast), ("cuda:1", fast), (torch.device("cuda", 0), fast)):
        got = resolved_for(auto, device)
        assert (got.dtype, got.compile) == want, device
    assert (auto.dtype, auto.compile) == ("auto", "auto")  # a copy: the config itself is left as it was
    for explicit in ({"dtype": "fp32", "compile": False}, {"dtype": "bf16", "compile": True},
                     {"dtype": "bf16"}, {"compile": False}):
        cfg = config_from_dict({**base, **explicit})
        for device in ("cpu", "cuda"):
            got = resolved_for(cfg, device)
            for key, value in explicit.items():
                assert getattr(got, key) == value, (explicit, device)
    mixed = resolved_for(config_from_dict({**base, "compile": False}), "cuda")
    assert (mixed.dtype, mixed.compile) == ("bf16", False)
    f = tmp_path / "c.yaml"  # YAML `auto` and --set values read the same
    f.write_text("preset: tiny\ncorpus: {sources: [{path: x.txt}]}\ndtype: auto\ncompile: auto\n")
    assert resolved_for(load_config(f, {"compile": True}), "cpu").compile is True
    for bad, match in (({"dtype": "fp16"}, r"dtype: 'fp16' is not one of auto, fp32, bf16"),
                       ({"compile": "yes"}, r"compile: expected true or false \(or auto\), got 'yes'"),
                       ({"compile": 1}, r"compile: expected true or false")):
        with pytest.raises(ConfigError, match=match) as e:
            config_from_dict({**base, **bad})
        assert "\n" not in str(e.value)


def test_auto_run_records_resolved_dtype(texts, prepared, tmp_path):
    """A CPU run of the default `auto` settings trains in fp32 without compile and records those values, as
    before `auto` existed."""
    logged = []
    train(_cfg(texts, tmp_path, corpus={"prepared_dir": str(prepared)}, max_steps=1, eval_iters=1),
          log=logged.append)
    saved = json.loads((list_checkpoints(tmp_path / "run")[-1] / "pretrain_config.json").read_text())
    assert (saved["dtype"], saved["compile"]) == ("fp32", False)
    assert any("(1 process, fp32)" in line for line in logged), logged


def test_repo_configs_load():
    for f in sorted((REPO / "configs" / "pretrain").rglob("*.yaml")):
        if f.name.startswith("corpus_"):
            continue
        cfg = load_config(f)
        assert cfg.corpus.sources or cfg.corpus.prepared_dir, f


# ---------------------------------------------------------------------------------------------- eval, CLI


def test_evaluate_perplexity_scores_every_token_once(prepared, tmp_path):
    from gpt2core.config import GPT2Config
    from gpt2core.model import GPT2LMModel

    tok = load_tokenizer(prepared / "tokenizer")
    torch.manual_seed(0)
    model = GPT2LMModel(GPT2Config.from_preset("tiny", vocab_size=len(tok))).eval()
    text = "The king is dead; long live the king! " * 12
    path = tmp_path / "heldout.txt"
    path.write_text(text)
    ids = [tok.eos_token_id] + tok(text)["input_ids"]
    assert len(ids) < 256
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids[:-1]])).logits[0]
    direct = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:])).item()
    whole = evaluate_perplexity(model, tok, path, seq_len=256, stride=256)
    assert whole["tokens"] == len(ids) - 1 and abs(whole["nll"] - direct) < 1e-5
    rolled = evaluate_perplexity(model, tok, path, seq_len=32, stride=8, batch_size=3)
    assert rolled["tokens"] == len(ids) - 1
    assert rolled["bytes"] == len(text.encode()) and math.isclose(
        rolled["bpb"], rolled["nll"] * rolled["tokens"] / math.log(2) / rolled["bytes"])


def test_cli_runs_tiny_config(texts, prepared, tmp_path, capsys):
    import argparse

    from gpt2core.pretrain.cli import add_pretrain_parser, main

    cfg_file = tmp_path / "cli.yaml"
    cfg_file.write_text(json.dumps(_cfg_dict(texts, tmp_path, corpus={"prepared_dir": str(prepared)})))
    parser = argparse.ArgumentParser()
    add_pretrain_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["pretrain", "--config", str(cfg_file), "--max-steps", "2", "--out",
                              str(tmp_path / "cli_run"), "--set", "eval_iters=1"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 2
    assert main(["pretrain", "--config", str(cfg_file), "--set", "seq_len=4096"]) == 2
    assert "seq_len" in capsys.readouterr().err


def test_gpt2suite_pretrain_tiny_config(shared_data, tmp_path):
    """The command a user runs, on the repo's own tiny config: corpus prep, tokenizer, training, checkpoint."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "tasks.cli.main", "pretrain", "--config", "configs/pretrain/tiny.yaml", "--out",
           str(tmp_path / "run"), "--set", f"corpus.cache_dir={tmp_path / 'cache'}", "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["status"] == "ok" and summary["step"] == 20
    assert (tmp_path / "run" / "model" / "config.json").exists()
