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
    """Parse `argv` and run the chosen subcommand's `func`. Bad input (`GPT2SuiteError`) prints one clear line and
    exits 2 (set GPT2SUITE_DEBUG=1 for the traceback); any other exception is a bug and surfaces as a traceback."""
    from gpt2core.errors import GPT2SuiteError

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except GPT2SuiteError as e:
        if os.environ.get("GPT2SUITE_DEBUG"):
            raise
        print(f"gpt2suite {args.command}: error: {e}", file=sys.stderr)
        return 2
