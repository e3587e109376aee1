"""gpt2core: the GPT-2 backbone (model, tokenizer, fast generation, pretraining, HF interop).

Depends on torch, safetensors, tokenizers and transformers only; it knows nothing about tasks. Names are
imported on first use, so that `import gpt2core.<submodule>` (and `gpt2suite --help`) stays fast; transformers'
`AutoConfig` / `AutoModelForCausalLM` open the project's own folders once `gpt2core` is imported (gpt2core.auto_register).
"""

from __future__ import annotations

import importlib
from typing import Any

from gpt2core import auto_register

_EXPORTS = {
    "PRESETS": "gpt2core.config",
    "GPT2Config": "gpt2core.config",
    "GPT2LMModel": "gpt2core.model",
    "KVCache": "gpt2core.kv_cache",
    "generate": "gpt2core.generation",
    "load_tokenizer": "gpt2core.tokenizer",
    "train_tokenizer": "gpt2core.tokenizer",
}

__all__ = list(_EXPORTS)

auto_register.install()


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gpt2core' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
