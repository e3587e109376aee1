"""Library noise off, so that a command's own one-line-per-unit progress is what a person reads: datasets'
"Generating split" / map bars, transformers' weight-loading bars, info logs and deprecation warnings."""

from __future__ import annotations

import logging
import os
import warnings


def silence_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|peft|torch)\.")
    for name in ("datasets", "transformers", "peft", "accelerate", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import datasets
    import transformers

    datasets.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
