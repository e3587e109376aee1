"""gpt2core: the GPT-2 backbone (model, tokenizer, fast generation, pretraining, HF interop).

Depends on torch, safetensors, tokenizers and transformers only; it knows nothing about tasks.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from gpt2core.config import PRESETS, GPT2Config
from gpt2core.generation import generate
from gpt2core.model import GPT2LMModel, KVCache
from gpt2core.tokenizer import load_tokenizer, train_tokenizer

AutoConfig.register(GPT2Config.model_type, GPT2Config, exist_ok=True)
AutoModelForCausalLM.register(GPT2Config, GPT2LMModel, exist_ok=True)

__all__ = [
    "PRESETS",
    "GPT2Config",
    "GPT2LMModel",
    "KVCache",
    "generate",
    "load_tokenizer",
    "train_tokenizer",
]
