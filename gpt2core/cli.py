"""What every `gpt2suite` entry point shares: offline defaults and one-line errors for bad input."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# Hub calls fail only after long retries without network; the local mirrors are the default.
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE")


def set_offline_defaults() -> None:
    for var in OFFLINE_VARS:
        os.environ.setdefault(var, "1")


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen subcommand's `func`; bad input (ValueError, FileNotFoundError) prints one
    clear line and exits 2 instead of a traceback (set GPT2SUITE_DEBUG=1 for the traceback)."""
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        if os.environ.get("GPT2SUITE_DEBUG"):
            raise
        print(f"gpt2suite {args.command}: error: {e}", file=sys.stderr)
        return 2
