"""The leaderboard's error, and the did-you-mean message every unknown name gets (config, methods, plan)."""

from __future__ import annotations

import difflib

from gpt2core.errors import GPT2SuiteError


class LeaderboardError(GPT2SuiteError, ValueError):
    """A leaderboard config or request that cannot be run as written. A `GPT2SuiteError`, so the command line
    prints it as one line and exits 2; still a ValueError, as it always was."""


def unknown_name(kind: str, name: str, valid: list[str] | tuple[str, ...], where: str) -> LeaderboardError:
    close = difflib.get_close_matches(name, list(valid), n=2)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return LeaderboardError(f"{where}: unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid)}")
