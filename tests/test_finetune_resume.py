"""Resumable fine-tuning: a run killed with SIGKILL after a checkpoint continues from it when run again with the
same out dir, and ends where an uninterrupted run of the same config ends (same steps, best validation score,
test metrics and weights); a changed config starts over. Runs a tiny classification fine-tune in subprocesses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.data.registry import available_tasks, get_task
from tasks.kinds import get_kind
from tasks.kinds.classification import Classification

REPO = Path(__file__).resolve().parents[1]

# The child: one fine-tuning run, slowed per step when asked so that the parent can kill it mid-training.
CHILD = r'''
import hashlib, json, sys, time
from pathlib import Path
from tasks.methods.finetune import finetune, load_finetune_config
from tasks.methods.finetune.trainer import TaskTrainer

task, backbone, out, result, delay, extra = sys.argv[1:7]
if float(delay) > 0:
    step = TaskTrainer.training_step
    def slow_step(self, *a, **k):
        time.sleep(float(delay))
        return step(self, *a, **k)
    TaskTrainer.training_step = slow_step
# the Trainer's own runtime of this invocation, which a resumed run's record must exceed by the time before the kill
runtime = {}
train = TaskTrainer.train
def timed_train(self, *a, **k):
    out = train(self, *a, **k)
    runtime["s"] = out.metrics["train_runtime"]
    return out
TaskTrainer.train = timed_train
overrides = dict(max_train_examples=48, val_examples=16, max_eval_examples=16, max_steps=16, eval_steps=4,
                 batch_size=4, eval_batch_size=16, max_length=32, early_stopping_patience=100, progress=False,
                 bf16=False, threads=1, logging_steps=1000, lr=1e-3, warmup=0.0)
overrides.update(json.loads(extra))
cfg = load_finetune_config(task, "full", overrides=overrides)
rec = finetune(task, "full", backbone, cfg, out_dir=out, runs_dir=out + "/records")
files = sorted((Path(out) / "model").glob("*.safetensors"))
digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
t = rec.details["training"]
json.dump({"metrics": rec.metrics, "global_steps": t["global_steps"], "best": t["best_val_metric"],
           "best_checkpoint": t["best_checkpoint"], "resumed_from": t["resumed_from"], "evals": t["log"],
           "weights": digest, "tokens": rec.tokens_seen, "train_seconds": rec.train_seconds,
           "runtime": runtime["s"]}, open(result, "w"))
'''


def classification_task() -> str:
    for name in available_tasks():
        spec = get_task(name)
        if isinstance(get_kind(spec.kind), Classification) and spec.has_split("validation"):
            return name
    pytest.skip("no classification spec with a validation split")


def child(tmp_path: Path, task: str, backbone: Path, out: Path, result: Path, delay: float = 0.0,
          extra: dict | None = None) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(script), task, str(backbone), str(out), str(result), str(delay),
                             json.dumps(extra or {})], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> None:
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output[-3000:]


def saved_steps(checkpoints: Path) -> list[int]:
    return sorted(int(p.name.split("-")[-1]) for p in checkpoints.glob("checkpoint-*")
                  if (p / "trainer_state.json").is_file())


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_one(tiny_backbone, tmp_path):
    task = classification_task()
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    reference = child(tmp_path, task, tiny_backbone, whole, tmp_path / "whole.json")  # runs meanwhile
    # checkpoints every 0.6 s of training (~every 2-3 slowed steps) on top of those at the evaluations (every 4)
    proc = child(tmp_path, task, tiny_backbone, killed, tmp_path / "first.json", delay=0.25,
                 extra={"checkpoint_minutes": 0.01})
    seen: set[int] = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        seen.update(saved_steps(killed / "checkpoints"))
        if any(s >= 6 for s in seen):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.communicate()[0][-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    steps = saved_steps(killed / "checkpoints")
    assert steps and max(steps) < 16 and not (tmp_path / "first.json").exists()
    assert any(s % 4 for s in seen | set(steps)), f"no time-based checkpoint between evaluations: {sorted(seen)}"
    assert len(steps) <= 2  # the newest and the best

    state = json.loads((killed / "checkpoints" / f"checkpoint-{max(steps)}" / "trainer_state.json").read_text())
    clock = state["stateful_callbacks"]["TrainClock"]["args"]["seconds_before"]
    assert clock >= 6 * 0.25  # the slowed steps trained before that checkpoint

    finish(child(tmp_path, task, tiny_backbone, killed, tmp_path / "resumed.json"))
    finish(reference)
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    whole_run = json.loads((tmp_path / "whole.json").read_text())
    assert resumed["resumed_from"] == f"checkpoint-{max(steps)}"
    assert whole_run["resumed_from"] is None
    assert resumed["global_steps"] == whole_run["global_steps"] == 16
    # the evaluations before the kill came back with the trainer state; those after it were run again
    assert [e["step"] for e in resumed["evals"]] == [e["step"] for e in whole_run["evals"]]
    assert resumed["best"] == pytest.approx(whole_run["best"])
    assert Path(resumed["best_checkpoint"]).name == Path(whole_run["best_checkpoint"]).name
    assert resumed["metrics"] == pytest.approx(whole_run["metrics"])
    assert resumed["tokens"] == whole_run["tokens"]
    # the record counts the training before the kill too: this invocation's runtime plus the checkpoint's clock
    assert abs(resumed["train_seconds"] - resumed["runtime"] - clock) < clock / 2
    assert resumed["weights"] == whole_run["weights"]
    assert not (killed / "checkpoints").exists()  # a finished run leaves only its model


def test_another_config_in_the_same_out_dir_starts_over(tiny_backbone, tmp_path):
    from tasks.methods.finetune.run import resume_point

    folder = tmp_path / "checkpoints"
    assert resume_point(folder, {"lr": 1e-3}, True) is None  # nothing yet: a marker is written
    (folder / "checkpoint-4").mkdir()
    (folder / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (folder / "checkpoint-8").mkdir()
    (folder / "checkpoint-8" / "trainer_state.json").write_text("{trunc")  # killed while writing it
    assert resume_point(folder, {"lr": 1e-3}, True) == folder / "checkpoint-4"
    assert resume_point(folder, {"lr": 1e-3}, False) is None  # resume: false starts over
    assert not (folder / "checkpoint-4").exists()
    (folder / "checkpoint-4").mkdir()
    (folder / "checkpoint-4" / "trainer_state.json").write_text("{}")
    assert resume_point(folder, {"lr": 2e-3}, True) is None
    assert not (folder / "checkpoint-4").exists()


def test_a_checkpoint_written_before_the_train_clock_gets_one_when_resumed(tmp_path):
    # A trainer state saved without a TrainClock entry (an older checkpoint): the Trainer's save looks the entry up
    # by name, so resuming must add it before the first save, counting from zero.
    from transformers import TrainerState

    from tasks.methods.finetune.trainer import TrainClock

    TrainerState(stateful_callbacks=[]).save_to_json(str(tmp_path / "trainer_state.json"))
    state = TrainerState.load_from_json(str(tmp_path / "trainer_state.json"))
    assert "TrainClock" not in state.stateful_callbacks
    TrainClock().on_train_begin(None, state, None)
    assert 0 <= state.stateful_callbacks["TrainClock"]["args"]["seconds_before"] < 60
