"""GPT-2 configuration with named presets, as a transformers `PretrainedConfig`."""

from __future__ import annotations

import difflib
from typing import Any

from transformers import PretrainedConfig

from gpt2core.errors import ModelConfigError

GPT2_VOCAB_SIZE = 50257
EOT_TOKEN_ID = 50256

# name -> (n_layer, n_embd, n_head, n_positions, vocab_size, approx. parameters with tied head)
# Parameter counts are exact for these shapes (see tests/test_model.py::test_preset_param_counts).
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=2, n_positions=256, vocab_size=8192),  # ~0.65M: tests
    "mini": dict(n_layer=6, n_embd=256, n_head=8, n_positions=512, vocab_size=8192),  # ~6.9M: CPU
    "small-cpu": dict(n_layer=6, n_embd=384, n_head=6, n_positions=512, vocab_size=16384),  # ~17.1M: CPU
    "gpt2": dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=GPT2_VOCAB_SIZE),  # 124.4M
    "gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16, n_positions=1024, vocab_size=GPT2_VOCAB_SIZE),  # 354.8M
    "gpt2-large": dict(n_layer=36, n_embd=1280, n_head=20, n_positions=1024, vocab_size=GPT2_VOCAB_SIZE),  # 774.0M
    "gpt2-xl": dict(n_layer=48, n_embd=1600, n_head=25, n_positions=1024, vocab_size=GPT2_VOCAB_SIZE),  # 1557.6M
}


class GPT2Config(PretrainedConfig):
    """GPT-2 hyper-parameters under Hugging Face's names, so `GPT2Config` of transformers maps one to one."""

    model_type = "gpt2core"
    # PEFT and generation look for the generic names.
    attribute_map = {
        "hidden_size": "n_embd",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
        "max_position_embeddings": "n_positions",
    }

    def __init__(
        self,
        vocab_size: int = GPT2_VOCAB_SIZE,
        n_positions: int = 1024,
        n_embd: int = 768,
        n_layer: int = 12,
        n_head: int = 12,
        n_inner: int | None = None,
        resid_pdrop: float = 0.0,
        embd_pdrop: float = 0.0,
        attn_pdrop: float = 0.0,
        layer_norm_epsilon: float = 1e-5,
        initializer_range: float = 0.02,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        tie_word_embeddings: bool = True,
        use_cache: bool = True,
        **kwargs: Any,
    ) -> None:
        if n_embd % n_head != 0:
            raise ModelConfigError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head}); change one of them")
        self.vocab_size = vocab_size
        self.n_positions = n_positions
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_inner = n_inner
        self.resid_pdrop = resid_pdrop
        self.embd_pdrop = embd_pdrop
        self.attn_pdrop = attn_pdrop
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        # The end-of-text token is GPT-2's only special token: default it to the last id.
        eot = vocab_size - 1
        super().__init__(
            bos_token_id=eot if bos_token_id is None else bos_token_id,
            eos_token_id=eot if eos_token_id is None else eos_token_id,
            pad_token_id=eot if pad_token_id is None else pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "GPT2Config":
        """A config from a named preset (`tiny`, `mini`, `small-cpu`, `gpt2`, ... `gpt2-xl`), with overrides."""
        if name not in PRESETS:
            close = difflib.get_close_matches(name, PRESETS, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ModelConfigError(f"unknown preset {name!r}.{hint} Known presets: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def num_parameters(self) -> int:
        """Parameter count with a tied LM head (GPT-2's convention)."""
        d, inner = self.n_embd, self.n_inner or 4 * self.n_embd
        per_block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * inner + inner) + (inner * d + d)
        return self.vocab_size * d + self.n_positions * d + self.n_layer * per_block + 2 * d

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token, nanoGPT's estimate: 6 N (forward + backward of the weights) + 12 L H Q T
        (attention scores), with N the weights less the position embeddings, the tied head counted once."""
        d, inner = self.n_embd, self.n_inner or 4 * self.n_embd
        n = self.vocab_size * d + self.n_layer * (4 * d * d + 2 * d * inner)
        return 6 * n + 12 * self.n_layer * self.n_head * (d // self.n_head) * seq_len


def _register_auto_config() -> None:
    """`AutoConfig` opens folders of model_type "gpt2core" (see gpt2core.auto_register for when this runs)."""
    from transformers import AutoConfig

    AutoConfig.register(GPT2Config.model_type, GPT2Config, exist_ok=True)


_register_auto_config()
