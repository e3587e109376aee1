"""The two decisions of scripts/gpu_backbone_v2.sh, from the runs' own files (summary.json, metrics.jsonl).

    python scripts/gpu_v2_report.py sweep WORK          # prints "<run> <size> <optimizer> <tok/s>" of the winner
    python scripts/gpu_v2_report.py final WORK OUT      # writes OUT/result.json (sweep table, final run, decision)

The sweep winner has the lowest WikiText-2 validation bits per byte (comparable across tokenizers). The final model
replaces today's default only if it is at least as good on WikiText-2 test bits per byte and better on held-out
German and French (REF_WT2_TEST, REF_DE, REF_FR in the environment: today's figures).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def _metrics(run: Path) -> list[dict[str, Any]]:
    f = run / "metrics.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.is_file() else []


def _bpb(summary: dict[str, Any], fragment: str) -> float | None:
    for path, res in summary.get("ppl_eval", {}).items():
        if fragment in Path(path).name:
            return res["bpb"]
    return None


def run_row(run: Path) -> dict[str, Any] | None:
    f = run / "summary.json"
    if not f.is_file():
        return None
    s = json.loads(f.read_text())
    logged = [m for m in _metrics(run) if "tok_per_s" in m]
    late = logged[len(logged) // 2:] or logged  # past warm-up and compilation
    mean = lambda key: round(sum(m[key] for m in late) / len(late), 4) if late and key in late[0] else None  # noqa: E731
    return {"run": run.name, "parameters": s.get("parameters"), "tokens": s.get("tokens"), "steps": s.get("step"),
            "stop_reason": s.get("stop_reason"), "val_loss": s.get("val_loss"), "tok_per_s": mean("tok_per_s"),
            "mfu": mean("mfu"), "wikitext2_val_bpb": _bpb(s, "wikitext2_validation"),
            "wikitext2_test_bpb": _bpb(s, "wikitext2_test"), "de_bpb": _bpb(s, "validation_de"),
            "fr_bpb": _bpb(s, "validation_fr"), "train_seconds": s.get("elapsed")}


def sweep_rows(work: Path) -> list[dict[str, Any]]:
    rows = []
    for run in sorted((work / "sweep").iterdir()) if (work / "sweep").is_dir() else []:
        row = run_row(run)
        if row is None:
            print(f"# {run.name}: no summary.json (see {work}/sweep_{run.name}.log)", file=sys.stderr)
            continue
        print(f"# {row['run']}: {row['parameters']:,} params, {row['tokens']:,} tokens, val_loss {row['val_loss']}, "
              f"WikiText-2 val {row['wikitext2_val_bpb']} bits/byte, {row['tok_per_s']} tok/s, MFU {row['mfu']}, "
              f"stop {row['stop_reason']}", file=sys.stderr)
        rows.append(row)
    return rows


def main() -> None:
    mode, work = sys.argv[1], Path(sys.argv[2])
    rows = [r for r in sweep_rows(work) if r["wikitext2_val_bpb"] is not None]
    if mode == "sweep":
        if rows:
            best = min(rows, key=lambda r: r["wikitext2_val_bpb"])
            size, opt = best["run"].rsplit("_", 1)
            print(best["run"], size, opt, int(best["tok_per_s"] or 1))
        return
    out = Path(sys.argv[3])
    final = run_row(work / "final")
    ref = {k: float(os.environ[k]) for k in ("REF_WT2_TEST", "REF_DE", "REF_FR")}
    decision: dict[str, Any] = {"reference": ref, "adopt": False}
    if final and None not in (final["wikitext2_test_bpb"], final["de_bpb"], final["fr_bpb"]):
        decision.update(
            wikitext2_test_at_least_as_good=final["wikitext2_test_bpb"] <= ref["REF_WT2_TEST"],
            de_better=final["de_bpb"] < ref["REF_DE"], fr_better=final["fr_bpb"] < ref["REF_FR"])
        decision["adopt"] = all(decision[k] for k in ("wikitext2_test_at_least_as_good", "de_better", "fr_better"))
    result = {"sweep": rows, "final": final, "decision": decision}
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"final": final, "decision": decision}, indent=1))


if __name__ == "__main__":
    main()
