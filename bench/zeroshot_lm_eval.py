"""Zero-/few-shot classification scoring: `gpt2suite fewshot` vs lm-evaluation-harness (`lm_eval --model hf`).

Both score SST-2 validation (872 sentences, both labels) with the same checkpoint, the same template
("Review: {sentence}\\nSentiment:" + " negative" / " positive"; lm-eval gets the same demonstrations as a
`fewshot_config` list when --shots > 0), the same batch size and one thread each, as separate processes, one
after the other. Wall time is the whole command (imports, model and data loading, scoring, writing results),
what a user waits for. The per-example log-likelihoods of the two must agree within 1e-4, else the script fails.
Prints both walls, our scoring time and, last, `ratio=<lm-eval wall / ours>`.

    .venv/bin/python bench/zeroshot_lm_eval.py                 # zero-shot, the default backbone
    .venv/bin/python bench/zeroshot_lm_eval.py --shots 4
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASK_YAML = """task: sst2_bench
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: multiple_choice
doc_to_text: "Review: {{{{sentence.strip()}}}}\\nSentiment:"
doc_to_target: label
doc_to_choice: ["negative", "positive"]
target_delimiter: " "
metric_list:
  - metric: acc
"""
# k-shot: the demonstrations our sampler drew, in its order, so both sides see one prompt per example
FEWSHOT_YAML = """fewshot_delimiter: "\\n\\n"
fewshot_config:
  sampler: first_n
  samples:
{samples}
"""


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return wall, out.stdout + out.stderr


def demo_samples(shots: int, seed: int) -> str:
    """Our k-shot demonstrations for SST-2 as lm-eval `fewshot_config.samples` YAML lines."""
    from tasks.data.load import load_rows
    from tasks.data.registry import get_task
    from tasks.methods.fewshot import sample_demos

    task = get_task("sst2")
    demos = sample_demos(task, load_rows(task, task.train_split), shots, seed)
    labels = [d["label"] if isinstance(d["label"], int) else task.label_names.index(d["label"]) for d in demos]
    return "\n".join(f"    - {{sentence: {json.dumps(d['text'])}, label: {y}}}" for d, y in zip(demos, labels))


def lm_eval_scores(out_dir: Path) -> dict[str, list[float]]:
    """sentence -> [log p(negative), log p(positive)] from lm-eval's logged samples."""
    scores = {}
    for line in next(out_dir.rglob("samples_*.jsonl")).read_text().splitlines():
        s = json.loads(line)
        doc = s["doc"] if isinstance(s["doc"], dict) else ast.literal_eval(s["doc"])
        resps = s["resps"] if isinstance(s["resps"], list) else ast.literal_eval(s["resps"])
        scores[doc["sentence"].strip()] = [float(r[0][0]) for r in resps]
    return scores


def our_scores(runs_dir: Path) -> tuple[dict[str, list[float]], float]:
    """sentence -> [log p(negative), log p(positive)] from our predictions file, and the scoring seconds."""
    from tasks.data.load import load_rows
    from tasks.data.registry import get_task

    task = get_task("sst2")
    text = {r["id"]: r["text"] for r in load_rows(task, task.eval_split)}
    record = json.loads(next(p for p in runs_dir.rglob("*.json")).read_text())
    scores = {}
    for line in next(runs_dir.rglob("*.predictions.jsonl")).read_text().splitlines():
        p = json.loads(line)
        lls = p["details"]["label_loglikelihoods"]
        scores[text[p["id"]]] = [lls["negative"], lls["positive"]]
    return scores, float(record["eval_seconds"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="results/backbones/default")
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from gpt2core.paths import DEFAULT_DATA_DIR, data_dir

    data = (data_dir() or DEFAULT_DATA_DIR) / "classification" / "sst2" / "validation.jsonl.gz"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="bench-lm-eval-") as tmp:
        tmp = Path(tmp)
        (tmp / "tasks").mkdir()
        yaml = TASK_YAML.format(data=data)
        if args.shots:
            yaml += FEWSHOT_YAML.format(samples=demo_samples(args.shots, args.seed))
        (tmp / "tasks" / "sst2_bench.yaml").write_text(yaml)
        lm_eval = [str(bin_dir / "lm_eval"), "--model", "hf", "--model_args", f"pretrained={args.model},dtype=float32",
                   "--include_path", str(tmp / "tasks"), "--tasks", "sst2_bench", "--device", "cpu",
                   "--batch_size", str(args.batch_size), "--output_path", str(tmp / "lm_eval"), "--log_samples"]
        if args.shots:
            lm_eval += ["--num_fewshot", str(args.shots)]
        ours = [str(bin_dir / "gpt2suite"), "fewshot", "--task", "sst2", "--shots", str(args.shots), "--seed",
                str(args.seed), "--model", args.model, "--device", "cpu", "--batch-size", str(args.batch_size),
                "--runs-dir", str(tmp / "ours")]
        t_ref, _ = run(lm_eval, env)
        t_ours, _ = run(ours, env)
        ref, (mine, scoring) = lm_eval_scores(tmp / "lm_eval"), our_scores(tmp / "ours")

    common = sorted(set(ref) & set(mine))
    diff = max(abs(a - b) for s in common for a, b in zip(ref[s], mine[s]))
    print(f"sst2 validation, {args.shots}-shot, {len(common)} of {len(mine)} examples compared, batch {args.batch_size}, "
          f"{args.threads} thread(s), model {args.model}")
    print(f"max |lm-eval - ours| log-likelihood: {diff:.2e}")
    if len(common) < 0.99 * len(mine) or diff > 1e-4:
        raise SystemExit("the two disagree: not the same prompts or not the same scores")
    print(f"lm-eval (--model hf): {t_ref:6.1f} s wall")
    print(f"gpt2suite fewshot:    {t_ours:6.1f} s wall ({scoring:.1f} s of it scoring)")
    print(f"ratio={t_ref / t_ours:.2f}")


if __name__ == "__main__":
    main()
