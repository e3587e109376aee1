"""Sharded pretraining (`parallelism: fsdp`, torch FSDP2) on 2 CPU processes (gloo): the same losses as DDP, sharded
checkpoints that resume exactly (also past a corrupt one, and into a DDP run), and that consolidate into one model.

All the runs share one `torchrun` launch (this file is its worker: `python tests/test_fsdp.py PLAN.json`), since
starting 2 processes costs more than the tiny runs themselves.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_pretrain import _cfg_dict, _losses, _records, prepared, texts  # noqa: F401  (fixtures)

from gpt2core.checkpoint import load_model
from gpt2core.errors import CheckpointError, ConfigError, TrainingDiverged
from gpt2core.pretrain.checkpoints import list_checkpoints
from gpt2core.pretrain.config import config_from_dict
from gpt2core.pretrain.loop import train
from gpt2core.pretrain.sharding import consolidate, is_sharded_checkpoint
from gpt2core.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
WORLD = 2


def _worker(plan_file: str) -> None:
    """Run each step of the plan in turn (each `train` joins and leaves its own process group)."""
    from gpt2core.pretrain.cli import main

    rank, plan = int(os.environ["RANK"]), Path(plan_file)
    # A process group re-made on the same store hangs (pytorch/pytorch#55967): each run gets a store of its own,
    # which rank 0 serves on a port it has just found free, instead of torchrun's
    os.environ.pop("TORCHELASTIC_USE_AGENT_STORE", None)
    for i, item in enumerate(json.loads(plan.read_text())):
        os.environ["MASTER_PORT"] = _share_port(plan.parent / f"port_{i}", rank)
        if item.get("corrupt") and rank == 0:  # the others wait for rank 0 at the start of the process group
            f = Path(item["corrupt"])
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        if "cli" in item:
            assert main(item["cli"]) == 0
        else:
            try:
                train(config_from_dict(item["cfg"]), resume=item.get("resume", False),
                      init_from=item.get("init_from"), log=print)
                assert "expect" not in item, f"no {item['expect']}"
            except TrainingDiverged:
                assert item.get("expect") == "TrainingDiverged"
        # rank 0 finishes (writes the final model) after the others have left the process group: wait for it, so
        # that the next run's group does not meet the old one
        (plan.parent / f"done_{i}_{rank}").touch()
        while len(list(plan.parent.glob(f"done_{i}_*"))) < WORLD:
            time.sleep(0.02)


def _share_port(file: Path, rank: int) -> str:
    if rank == 0:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = str(sock.getsockname()[1])
        (file.parent / f".{file.name}").write_text(port)
        os.replace(file.parent / f".{file.name}", file)
        return port
    while not file.exists():
        time.sleep(0.02)
    return file.read_text()


@pytest.fixture(scope="module")
def runs(texts, prepared, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("fsdp")

    def cfg(name, **top):
        # global batch 2 processes x 4 rows x 2 micro-steps; checkpoints at steps 2, 4 and 6, the newest 2 kept
        base = dict(out_dir=str(tmp / name), corpus={"prepared_dir": str(prepared)}, grad_accum=2, threads=1,
                    checkpoint_interval=2, eval_interval=3, eval_iters=3)
        return _cfg_dict(texts, tmp, **{**base, **top})

    cli_cfg = tmp / "fsdp.yaml"
    cli_cfg.write_text(json.dumps(cfg("fsdp")))  # JSON is YAML
    corrupt = tmp / "fallback" / "checkpoints" / "step_000004" / "sharded" / "__1_0.distcp"
    plan = [
        {"cfg": cfg("ddp")},
        {"cli": ["pretrain", "--config", str(cli_cfg), "--set", "parallelism=fsdp"]},
        {"cfg": cfg("half", parallelism="fsdp", max_steps=3)},
        {"cfg": cfg("half", parallelism="fsdp"), "resume": True},
        {"cfg": cfg("fallback", parallelism="fsdp", max_steps=4)},
        {"cfg": cfg("fallback", parallelism="fsdp"), "resume": True, "corrupt": str(corrupt)},
        {"cfg": cfg("to_ddp", parallelism="fsdp", max_steps=3)},
        {"cfg": cfg("to_ddp", parallelism="ddp"), "resume": True},
        {"cfg": cfg("from_ddp", max_steps=3)},
        {"cfg": cfg("from_ddp", parallelism="fsdp"), "resume": True},
        {"cfg": cfg("init_ddp", max_steps=2), "init_from": str(tmp / "ddp" / "model")},
        {"cfg": cfg("init_fsdp", parallelism="fsdp", max_steps=2), "init_from": str(tmp / "ddp" / "model")},
        {"cfg": cfg("budget", parallelism="fsdp", max_time_minutes=1e-6)},
        {"cfg": cfg("diverged", parallelism="fsdp", lr=1e30, warmup_steps=0, checkpoint_interval=1),
         "expect": "TrainingDiverged"},
        {"cfg": cfg("muon_ddp", optimizer="muon", max_steps=3)},
        {"cfg": cfg("muon_fsdp", optimizer="muon", parallelism="fsdp", max_steps=3)},
    ]
    plan_file = tmp / "plan.json"
    plan_file.write_text(json.dumps(plan))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
                           str(Path(__file__)), str(plan_file)], capture_output=True, text=True, timeout=240, env=env,
                          cwd=REPO)
    (tmp / "torchrun.log").write_text(proc.stdout + proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if "Error" in line and "[rank" in line]
    assert proc.returncode == 0, "\n".join(errors[:6]) + f"\n(the whole log: {tmp / 'torchrun.log'})"
    print(f"torchrun: {time.time() - t0:.1f} s for {len(plan)} runs")
    return tmp, proc.stdout


def _max_diff(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max(abs(a[k] - b[k]) for k in a)


def _metric(out: Path, key: str) -> dict:
    return {r["step"]: r[key] for r in _records(out / "metrics.jsonl") if key in r}


def test_fsdp_matches_ddp(runs):
    tmp, _ = runs
    for key in ("loss", "grad_norm", "val_loss"):
        a, b = _metric(tmp / "ddp", key), _metric(tmp / "fsdp", key)
        assert len(a) >= 2 and _max_diff(a, b) < 1e-5, (key, a, b)
    print(f"max |ddp - fsdp| loss: {_max_diff(_losses(tmp / 'ddp'), _losses(tmp / 'fsdp')):.2e}")
    ddp = load_model(tmp / "ddp" / "model").state_dict()
    fsdp = load_model(tmp / "fsdp" / "model").state_dict()
    assert max((ddp[k] - fsdp[k]).abs().max().item() for k in ddp) < 1e-4


def test_sharded_checkpoints_resume_exactly(runs):
    tmp, _ = runs
    assert [p.name for p in list_checkpoints(tmp / "fsdp")] == ["step_000004", "step_000006"]  # keep_last_k: 2
    ckpt = list_checkpoints(tmp / "fsdp")[-1]
    assert sorted(p.name for p in (ckpt / "sharded").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert not list(ckpt.glob("*.safetensors")) and (ckpt / "trainer_state.pt").is_file()
    assert not [p for p in (tmp / "fsdp" / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporaries
    full, half = _losses(tmp / "fsdp"), _losses(tmp / "half")
    assert sorted(full) == sorted(half) == [1, 2, 3, 4, 5, 6]
    assert full == half  # exact equality at every step
    a = load_model(tmp / "fsdp" / "model").state_dict()
    b = load_model(tmp / "half" / "model").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_falls_back_past_a_corrupt_sharded_checkpoint(runs):
    tmp, stdout = runs
    assert "step_000004 is corrupt" in stdout and "falling back to the previous checkpoint step_000002" in stdout
    full, fallback = _losses(tmp / "fsdp"), _losses(tmp / "fallback")
    assert {s: fallback[s] for s in (3, 4, 5, 6)} == {s: full[s] for s in (3, 4, 5, 6)}  # steps 3-4 trained again


def test_checkpoints_resume_across_parallelisms(runs, texts, prepared, tmp_path):  # noqa: F811
    tmp, stdout = runs
    ddp = _losses(tmp / "ddp")
    assert _max_diff(ddp, _losses(tmp / "to_ddp")) < 1e-5  # sharded checkpoint, resumed by DDP
    # ... and by one process (1 process x 4 micro-steps: the same global batch), with no process group
    shutil.copytree(tmp / "fsdp" / "checkpoints" / "step_000004", tmp_path / "one" / "checkpoints" / "step_000004")
    train(config_from_dict(_cfg_dict(texts, tmp_path, out_dir=str(tmp_path / "one"), grad_accum=4, threads=1,
                                     corpus={"prepared_dir": str(prepared)}, eval_interval=3, eval_iters=3)),
          resume=True, log=lambda *_: None)
    one = _losses(tmp_path / "one")
    assert sorted(one) == [5, 6] and _max_diff(one, {s: ddp[s] for s in one}) < 1e-5
    assert _max_diff(ddp, _losses(tmp / "from_ddp")) < 1e-5  # DDP checkpoint, resumed by FSDP
    assert [p.name for p in list_checkpoints(tmp / "from_ddp")] == ["step_000004", "step_000006"]
    assert is_sharded_checkpoint(tmp / "from_ddp" / "checkpoints" / "step_000006")
    # --init-from a model folder: the weights alone, into the shards
    assert "initialised the weights from" in stdout
    assert _max_diff(_losses(tmp / "init_ddp"), _losses(tmp / "init_fsdp")) < 1e-5


def test_time_budget_and_divergence_stop_every_rank(runs):
    tmp, _ = runs
    summary = json.loads((tmp / "budget" / "summary.json").read_text())
    assert summary["stop_reason"] == "max_time_minutes" and summary["step"] == 1
    assert [p.name for p in list_checkpoints(tmp / "budget")] == ["step_000001"]
    events = _records(tmp / "diverged" / "metrics.jsonl")
    assert events[-1]["event"] == "diverged"
    kept = list_checkpoints(tmp / "diverged")
    assert kept and all(torch.isfinite(p).all() for p in consolidate(kept[-1]).parameters())


def test_consolidate_gives_the_final_model(runs, tmp_path):
    tmp, _ = runs
    ckpt = list_checkpoints(tmp / "fsdp")[-1]
    model = consolidate(ckpt, out_dir=tmp_path / "hf")
    final = load_model(tmp / "fsdp" / "model").state_dict()
    ours = model.state_dict()
    assert sorted(ours) == sorted(final) and all(torch.equal(ours[k], final[k]) for k in final)
    assert model.lm_head.weight is model.transformer.wte.weight
    again = load_model(tmp_path / "hf").state_dict()
    assert all(torch.equal(again[k], final[k]) for k in final)
    with pytest.raises(CheckpointError, match="not a sharded checkpoint.*load_model"):
        consolidate(tmp / "ddp" / "model")


def test_muon_under_fsdp_matches_ddp(runs, prepared):  # noqa: F811
    """torch.optim.Muon on FSDP's DTensor shards: DTensor gathers what Newton-Schulz needs, so the update is the
    full matrix's, up to bf16 rounding (an update orthogonalised per shard would be 35-64% off)."""
    from gpt2core.pretrain.loop import build_model
    from gpt2core.pretrain.optim import is_hidden_matrix

    tmp, _ = runs
    a, b = _losses(tmp / "muon_ddp"), _losses(tmp / "muon_fsdp")
    assert _max_diff(a, b) < 2e-4
    cfg = config_from_dict(json.loads((list_checkpoints(tmp / "muon_ddp")[-1] / "pretrain_config.json").read_text()))
    torch.manual_seed(cfg.seed)
    init = build_model(cfg, load_tokenizer(prepared / "tokenizer")).state_dict()
    ddp = load_model(tmp / "muon_ddp" / "model").state_dict()
    fsdp = load_model(tmp / "muon_fsdp" / "model").state_dict()
    rel = {k: ((fsdp[k] - ddp[k]).norm() / (ddp[k] - init[k]).norm()).item() for k in ddp
           if is_hidden_matrix(k, ddp[k])}
    print(f"muon: max |ddp - fsdp| loss {_max_diff(a, b):.2e}; the block matrices' updates differ by "
          f"{min(rel.values()):.1e} to {max(rel.values()):.1e} (relative)")
    assert len(rel) == 8 and max(rel.values()) < 0.15


def test_fsdp_needs_torchrun_and_a_known_name(texts, prepared, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    cfg = _cfg_dict(texts, tmp_path, corpus={"prepared_dir": str(prepared)}, parallelism="fsdp")
    with pytest.raises(ConfigError, match="parallelism: fsdp.*torchrun --standalone"):
        train(config_from_dict(cfg), log=lambda *_: None)
    with pytest.raises(ConfigError, match=r"parallelism: unknown parallelism 'fdsp'. Did you mean 'fsdp'"):
        config_from_dict({**cfg, "parallelism": "fdsp"})


if __name__ == "__main__":
    _worker(sys.argv[1])


def test_a_sharded_checkpoint_converts_from_the_command_line(runs, tmp_path):
    from tasks.cli.main import main

    tmp, _ = runs
    ckpt = list_checkpoints(tmp / "fsdp")[-1]
    with pytest.raises(CheckpointError, match="sharded .FSDP. training checkpoint.*gpt2suite convert"):
        load_model(ckpt)
    assert main(["convert", "--model", str(ckpt), "--out", str(tmp_path / "one")]) == 0
    final = load_model(tmp / "fsdp" / "model").state_dict()
    ours = load_model(tmp_path / "one").state_dict()
    assert all(torch.equal(ours[k], final[k]) for k in final)
