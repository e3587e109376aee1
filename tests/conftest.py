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
