"""Choose a generation task's decoding on validation: score a small grid of decodings of one fine-tuned model on
the first N validation examples (a fixed shuffle, as `gpt2suite eval` takes them) and print the table and the best.

    .venv/bin/python scripts/choose_decoding.py --task TASK --model RUN/model --n 100 \
        [--grid greedy,greedy+ngram3,beam4,beam4+ngram3] [--length-penalty 1.0] [--out .dev/decoding/TASK.json]

A grid entry is `greedy` or `beamK`, optionally `+ngramN` (no_repeat_ngram_size N) and `+rpX` (repetition_penalty
X); every entry uses `--length-penalty` for beams. The input settings (max_length, max target tokens, ...) are the
ones `gpt2suite eval` would use for the model's method. The best (by the task's primary metric) goes into the
task's spec by hand, with the numbers and this command in a YAML comment. Prompted (zero/few-shot) answers decode
greedily, so this script scores fine-tuned (or plain) models only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt2core.io import atomic_write_json  # noqa: E402
from tasks.data.registry import get_task  # noqa: E402
from tasks.errors import ConfigError  # noqa: E402
from tasks.evaluation.predict import decoding, eval_rows, predict, score  # noqa: E402
from tasks.methods import adapters  # noqa: E402
from tasks.methods.finetune.config import load_finetune_config, predict_settings  # noqa: E402

ENTRY = re.compile(r"^(greedy|beam(\d+))((?:\+(?:ngram\d+|rp[0-9.]+))*)$")


def parse_entry(text: str, length_penalty: float) -> dict:
    """`beam4+ngram3` -> PredictSettings overrides {num_beams: 4, no_repeat_ngram_size: 3, ...}."""
    m = ENTRY.match(text.strip())
    if not m:
        raise ConfigError(f"--grid entry {text!r}: write greedy or beamK, optionally +ngramN and +rpX "
                          "(e.g. beam4+ngram3)")
    out = {"num_beams": int(m.group(2) or 1), "length_penalty": length_penalty, "no_repeat_ngram_size": 0,
           "repetition_penalty": 1.0}
    for part in filter(None, m.group(3).split("+")):
        if part.startswith("ngram"):
            out["no_repeat_ngram_size"] = int(part[5:])
        else:
            out["repetition_penalty"] = float(part[2:])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True)
    ap.add_argument("--model", required=True, help="a fine-tuned model folder (RUN/model) or a backbone")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--split", default="validation")
    ap.add_argument("--n", type=int, default=100, help="validation examples (first N of the fixed shuffle)")
    ap.add_argument("--grid", default="greedy,greedy+ngram3,beam4,beam4+ngram3")
    ap.add_argument("--length-penalty", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSON of the table (default: .dev/decoding/<task>.json)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    spec = get_task(args.task)
    grid = [parse_entry(e, args.length_penalty) for e in args.grid.split(",")]
    model, tokenizer, info = adapters.load_trained(spec, args.model, args.adapter)
    method = info["method"] if info["method"] in adapters.METHODS else "full"
    cfg = load_finetune_config(spec, method, overrides={"eval_batch_size": args.batch_size} if args.batch_size else {})
    base = predict_settings(spec, cfg, min(cfg.max_length, model.config.n_positions), adapters.n_virtual_tokens(model))
    rows = eval_rows(spec, args.split, args.n)
    table = []
    for entry in grid:
        settings = dataclasses.replace(base, **entry)
        t0 = time.perf_counter()
        preds = predict(spec, model, tokenizer, rows, settings)
        seconds = time.perf_counter() - t0
        metrics, _ = score(spec, rows, preds)
        n_tokens = sum(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in preds)
        table.append({"decoding": decoding(spec, settings), "metrics": metrics, "seconds": round(seconds, 2),
                      "predicted_tokens": n_tokens, "example": preds[0]})
        print(f"{decoding(spec, settings)['name']:<55} " + "  ".join(f"{k} {v:.2f}" for k, v in metrics.items())
              + f"  {seconds:.1f} s ({n_tokens / seconds:.0f} predicted tok/s)", flush=True)
    best = max(table, key=lambda r: r["metrics"][spec.primary_metric])
    print(f"best on {len(rows)} {args.split} examples by {spec.primary_metric}: {best['decoding']['name']}")
    out = Path(args.out or Path(".dev") / "decoding" / f"{spec.name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, {"task": spec.name, "model": os.fspath(args.model), "method": info["method"],
                            "split": args.split, "n_examples": len(rows), "command": " ".join(sys.argv),
                            "table": table, "best": best["decoding"]})
    print(f"table: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
