"""The one error base class of the project, and the error classes of gpt2core.

`GPT2SuiteError` (and its subclasses) mean "bad input: the user can fix it"; the command line prints such an
error as one line and exits 2. Anything else is a bug and surfaces as a traceback. gpt2core's classes live here,
below every other module, so that any module can raise them; the modules that raise them re-export them
(`gpt2core.checkpoint.CheckpointError`, `gpt2core.tokenizer.TokenizerError`, ...).
"""

from __future__ import annotations


class GPT2SuiteError(Exception):
    """Bad input (a config, a path, a dataset, a request) that the user can fix; the message says how."""


class ConfigError(GPT2SuiteError):
    """A config file or mapping that cannot be used as written (unknown key, wrong type, bad value)."""


# The classes below replace what gpt2core raised as ValueError (RuntimeError for TrainingDiverged) before they
# existed; they keep that base so that callers (and transformers) catching the builtin still do.


class ModelConfigError(ConfigError, ValueError):
    """GPT-2 hyper-parameters that make no model: an unknown preset, n_embd not divisible by n_head."""


class ModelInputError(GPT2SuiteError, ValueError):
    """Input the model cannot take: more tokens than n_positions, ids outside the vocabulary, a bad generation
    argument (an empty prompt, a negative temperature, top_p outside (0, 1], ...)."""


class CheckpointError(GPT2SuiteError, ValueError):
    """A model folder that cannot be loaded as it is: missing, not a model, weights damaged or not matching."""


class CheckpointCorrupt(CheckpointError):
    """A pretraining checkpoint that cannot be resumed from as it is (it is left in place)."""


class TokenizerError(GPT2SuiteError, ValueError):
    """A tokenizer folder that holds no usable tokenizer, or training input that cannot make one."""


class CorpusError(GPT2SuiteError, ValueError):
    """A pretraining corpus that cannot be prepared or opened: a missing or unreadable source, no text, a damaged
    prepared folder."""


class TrainingDiverged(GPT2SuiteError, RuntimeError):
    """The loss became NaN or infinite; training stopped before the bad update."""
