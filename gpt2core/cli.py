"""What every `gpt2suite` entry point shares: offline defaults and one-line errors for bad input."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

# Hub calls fail only after long retries without network; the local mirrors are the default.
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE")


def set_offline_defaults() -> None:
    for var in OFFLINE_VARS:
        os.environ.setdefault(var, "1")


class _UsageError(Exception):
    """A command line argparse cannot parse; `run_command` prints it as one line."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield from _parsers(sub)


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """argparse prints the usage block and a message, then exits; raise instead, so the error is one line."""

    def error(message: str, prog: str = "") -> NoReturn:
        raise _UsageError(prog, message)

    for p in _parsers(parser):
        p.error = lambda message, prog=p.prog: error(message, prog)  # type: ignore[method-assign]


def _check_text_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """An argument that is not valid UTF-8 (Python keeps the bad bytes as lone surrogates) fails here, named,
    instead of deep in a tokenizer or a JSON writer."""
    from gpt2core.errors import ConfigError

    shown = {a.dest: (a.option_strings or [a.dest])[-1] for p in _parsers(parser) for a in p._actions}
    for name, value in vars(args).items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if not isinstance(item, str):
                continue
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as e:
                bad = item[e.start:e.end].encode("utf-8", "surrogateescape")
                raise ConfigError(f"{shown.get(name, name)} is not valid UTF-8 text (bytes {bad!r} at character "
                                  f"{e.start}); pass UTF-8 (check the shell's locale, e.g. LANG=C.UTF-8, or the "
                                  "encoding of the text you pasted)") from None


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen subcommand's `func`. Bad input (`GPT2SuiteError`, or a command line argparse
    rejects) prints one clear line and exits 2 (set GPT2SUITE_DEBUG=1 for the traceback); an interruption prints one
    line and exits 130; any other exception is a bug and surfaces as a traceback."""
    from gpt2core.errors import GPT2SuiteError

    _one_line_errors(parser)
    try:
        args = parser.parse_args(argv)
    except _UsageError as e:
        print(f"{e.prog}: error: {e}; see {e.prog} --help", file=sys.stderr)
        return 2
    try:
        _check_text_arguments(parser, args)
        return args.func(args)
    except GPT2SuiteError as e:
        if os.environ.get("GPT2SUITE_DEBUG"):
            raise
        print(f"gpt2suite {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C (or SIGINT from a time limit) is not a bug: one line, no traceback
        print(f"gpt2suite {args.command}: interrupted (records and checkpoints already written are kept; the "
              "same command resumes a leaderboard, fine-tuning or pretraining run)", file=sys.stderr)
        return 130


def _one_line(e: Any) -> str:
    """The message on one line: a library's multi-line text (quoted inside ours) must not break the one-line rule."""
    return re.sub(r"\s*\n\s*", " ", str(e).strip())
