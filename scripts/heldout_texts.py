"""Held-out texts for backbone comparisons, as plain `.txt.gz` files that `ppl_eval` and `--export-shards` take:
the German and French sides of Multi30k's validation split (one sentence per line; never in the pretraining corpus,
which takes train splits only). WikiText-2's validation and test files are used as they are.

    python scripts/heldout_texts.py [--out .dev/heldout]     # -> multi30k_validation_de.txt.gz, ..._fr.txt.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from gpt2core.io import atomic_write_bytes
from gpt2core.paths import data_dir

SOURCES = {"de": "translation/multi30k_en_de/validation.jsonl.gz", "fr": "translation/multi30k_en_fr/validation.jsonl.gz"}


def write_heldout(out: Path) -> list[Path]:
    written = []
    for lang, rel in SOURCES.items():
        with gzip.open(data_dir() / rel, "rt", encoding="utf-8") as f:
            lines = [json.loads(line)["translation"][lang].strip() for line in f if line.strip()]
        # mtime=0: the same bytes on every run, so the file's hash (and any cache key over it) is stable
        data = gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0)
        written.append(atomic_write_bytes(out / f"multi30k_validation_{lang}.txt.gz", data))
        print(f"{written[-1]}: {len(lines):,} {lang} sentences")
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".dev/heldout", type=Path)
    write_heldout(parser.parse_args().out)
