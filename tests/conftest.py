"""Shared test setup: offline Hugging Face, the shared data folder, small seeded models."""

import os
import tempfile

# Before any Hugging Face import: never wait on the hub (offline calls fail at once instead of retrying).
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="gpt2suite-hf-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GPT2SUITE_DATA_DIR") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: on a shared 2-core machine, 2 threads spin against other processes and a
    tiny training step takes ~40x longer."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set GPT2SUITE_DATA_DIR)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory, shared_data) -> Path:
    """A saved model folder (tiny preset, random weights) with a 1,024-token BPE trained on Shakespeare:
    what task pipelines load in tests instead of the committed backbone."""
    import torch

    from gpt2core import GPT2Config, GPT2LMModel, train_tokenizer

    out = tmp_path_factory.mktemp("tiny_backbone")
    tok = train_tokenizer([shared_data / "corpus" / "tinyshakespeare" / "input.txt.gz"], 1024, out,
                          show_progress=False)
    torch.manual_seed(0)
    model = GPT2LMModel(GPT2Config.from_preset("tiny", vocab_size=len(tok), n_positions=512))
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def pair():
    """(transformers' GPT2LMHeadModel, our GPT2LMModel) with the same random weights, vocabulary 300 (id 299 is
    <|endoftext|>). The embedding is scaled up for sharp outputs: greedy paths are not ties, and plain greedy falls
    into the repetition loops that the decoding guards must break."""
    import torch
    from transformers import GPT2Config as HFGPT2Config
    from transformers import GPT2LMHeadModel

    from gpt2core import GPT2LMModel

    vocab = 300
    torch.manual_seed(0)
    cfg = HFGPT2Config(vocab_size=vocab, n_positions=96, n_embd=64, n_layer=3, n_head=4,
                       bos_token_id=vocab - 1, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    hf = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        hf.transformer.wte.weight.mul_(20)
    return hf, GPT2LMModel.from_hf(hf).eval()
