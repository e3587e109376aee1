"""The one error base class of the project.

`GPT2SuiteError` (and its subclasses) mean "bad input: the user can fix it"; the command line prints such an
error as one line and exits 2. Anything else is a bug and surfaces as a traceback.
"""

from __future__ import annotations


class GPT2SuiteError(Exception):
    """Bad input (a config, a path, a dataset, a request) that the user can fix; the message says how."""


class ConfigError(GPT2SuiteError):
    """A config file or mapping that cannot be used as written (unknown key, wrong type, bad value)."""
