"""The suite's errors: every one is a `gpt2core.errors.GPT2SuiteError` (bad input the user can fix), which the
command line prints as one line with exit status 2. Anything else that escapes is a bug (a traceback)."""

from __future__ import annotations

from gpt2core.errors import ConfigError, GPT2SuiteError

__all__ = ["ConfigError", "GPT2SuiteError", "TaskError", "DataError", "MethodError", "RecordError",
           "LeaderboardError"]


class TaskError(GPT2SuiteError):
    """A task spec, task name or split that does not exist or cannot be used as asked."""


class DataError(TaskError):
    """Task data that cannot be read or turned into model inputs as asked."""


class MethodError(GPT2SuiteError):
    """A method (fine-tuning, adapter, baseline, prompting) that does not exist or does not apply."""


class RecordError(GPT2SuiteError):
    """A run record or predictions file that cannot be read or written as it is."""


class LeaderboardError(GPT2SuiteError):
    """A leaderboard config or request that cannot be run as written."""
