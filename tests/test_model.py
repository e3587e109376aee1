"""The backbone against transformers' GPT2LMHeadModel (the golden reference), plus its own contract."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2LMHeadModel
from transformers import GPT2Config as HFGPT2Config

from gpt2core import GPT2Config, GPT2LMModel
from gpt2core.checkpoint import CheckpointError, load_model
from gpt2core.errors import GPT2SuiteError

# Three shapes: a tiny one, one with an odd head count and an explicit n_inner, one deeper with a wide vocab.
HF_CONFIGS = [
    dict(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=4),
    dict(vocab_size=257, n_positions=48, n_embd=48, n_layer=3, n_head=3, n_inner=80),
    dict(vocab_size=1000, n_positions=128, n_embd=64, n_layer=4, n_head=8),
]


def make_pair(kwargs, seed=0):
    torch.manual_seed(seed)
    cfg = HFGPT2Config(**kwargs, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                       bos_token_id=kwargs["vocab_size"] - 1, eos_token_id=kwargs["vocab_size"] - 1)
    hf = GPT2LMHeadModel(cfg).eval()
    # Non-trivial LayerNorm and bias values so that a mis-mapped parameter cannot hide behind 1s and 0s.
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return hf, GPT2LMModel.from_hf(hf).eval()


def left_padded(batch, length, vocab, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(1, batch):
        mask[row, : row * 2] = 0
    return ids, mask


@pytest.mark.parametrize("kwargs", HF_CONFIGS)
def test_logits_match_transformers(kwargs):
    hf, ours = make_pair(kwargs)
    ids, _ = left_padded(3, 17, kwargs["vocab_size"])
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids).logits).abs().max() < 1e-4


@pytest.mark.parametrize("kwargs", HF_CONFIGS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_logits_match_with_padding_mask(kwargs, side):
    hf, ours = make_pair(kwargs)
    ids, mask = left_padded(3, 17, kwargs["vocab_size"])
    if side == "right":
        mask = mask.flip(-1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # what transformers' generate passes
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, position_ids=positions).logits
        got = ours(ids, attention_mask=mask).logits  # ours derives positions from the mask
    real = mask.bool()
    assert (ref[real] - got[real]).abs().max() < 1e-4
    assert torch.isfinite(got).all()  # padded rows must not turn into NaN


@pytest.mark.parametrize("kwargs", HF_CONFIGS)
def test_logits_match_with_kv_cache(kwargs):
    hf, ours = make_pair(kwargs)
    ids, mask = left_padded(3, 20, kwargs["vocab_size"])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        h1 = hf(ids[:, :12], attention_mask=mask[:, :12], position_ids=positions[:, :12], use_cache=True)
        o1 = ours(ids[:, :12], attention_mask=mask[:, :12], use_cache=True)
        h2 = hf(ids[:, 12:], attention_mask=mask, position_ids=positions[:, 12:], cache=h1.past_key_values)
        o2 = ours(ids[:, 12:], attention_mask=mask, past_key_values=o1.past_key_values)
        full = ours(ids, attention_mask=mask).logits[:, 12:]
    assert (h2.logits - o2.logits).abs().max() < 1e-4
    assert (full - o2.logits).abs().max() < 1e-4


def test_loss_and_gradients_match_transformers():
    hf, ours = make_pair(HF_CONFIGS[0])
    ids, _ = left_padded(2, 16, 100)
    labels = ids.clone()
    labels[:, :3] = -100
    ref, got = hf(ids, labels=labels), ours(ids, labels=labels)
    assert abs(ref.loss.item() - got.loss.item()) < 1e-5
    ref.loss.backward()
    got.loss.backward()
    g_ref = hf.transformer.h[1].attn.c_attn.weight.grad.t()  # Conv1D stores (in, out)
    assert (g_ref - ours.transformer.h[1].attn.c_attn.weight.grad).abs().max() < 1e-5
    assert (hf.transformer.wte.weight.grad - ours.transformer.wte.weight.grad).abs().max() < 1e-5


def test_the_fused_head_and_loss_of_pretraining_give_transformers_loss_and_gradients():
    """`targets=` (the next tokens, as pretraining passes them) fuses the LM head with the loss; loss and gradients
    equal transformers' `labels=` path, which shifts the labels itself."""
    hf, ours = make_pair(HF_CONFIGS[0])
    ids, _ = left_padded(2, 16, 100)
    labels = ids.clone()
    labels[:, :3] = -100
    targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    ref, got = hf(ids, labels=labels), ours(ids, targets=targets)
    assert got.logits is None and abs(ref.loss.item() - got.loss.item()) < 1e-5
    ref.loss.backward()
    got.loss.backward()
    g_ref = hf.transformer.h[1].mlp.c_fc.weight.grad.t()  # Conv1D stores (in, out)
    assert (g_ref - ours.transformer.h[1].mlp.c_fc.weight.grad).abs().max() < 1e-5
    assert (hf.transformer.wte.weight.grad - ours.transformer.wte.weight.grad).abs().max() < 1e-5  # head + embedding


def test_export_round_trip_and_hf_folder(tmp_path):
    _, ours = make_pair(HF_CONFIGS[1])
    hf = ours.to_hf()
    ids, _ = left_padded(2, 10, 257)
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids).logits).abs().max() < 1e-5
    hf.save_pretrained(tmp_path / "hf")
    back = load_model(tmp_path / "hf")  # a transformers GPT-2 folder loads through the same entry point
    back_sd = GPT2LMModel.from_hf(hf.state_dict(), n_head=3).eval()  # ... and so does a bare state dict
    with pytest.raises(ValueError, match="pass n_head"):
        GPT2LMModel.from_hf(hf.state_dict())  # 48 wide: GPT-2's 64-wide heads cannot be assumed
    with torch.no_grad():
        assert (back(ids).logits - ours(ids).logits).abs().max() < 1e-5
        assert (back_sd(ids).logits - ours(ids).logits).abs().max() < 1e-5


def test_save_pretrained_and_auto_classes(tmp_path):
    model = GPT2LMModel(GPT2Config.from_preset("tiny"))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "gpt2core"
    assert isinstance(AutoConfig.from_pretrained(tmp_path), GPT2Config)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(loaded, GPT2LMModel)
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()  # still tied
    ids = torch.randint(0, 8192, (1, 8))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model.eval()(ids).logits)


def test_preset_param_counts():
    # Stated counts (config.py) are the real ones; GPT-2 small is OpenAI's 124,439,808 with a tied head.
    assert GPT2Config.from_preset("gpt2").num_parameters() == 124_439_808
    for name in ("tiny", "mini", "small-cpu"):
        cfg = GPT2Config.from_preset(name)
        assert GPT2LMModel(cfg).num_parameters() == cfg.num_parameters()


def test_unknown_preset_suggests_close_names():
    with pytest.raises(ValueError, match="unknown preset 'gpt2-smal'.*'gpt2'") as e:
        GPT2Config.from_preset("gpt2-smal")
    assert isinstance(e.value, GPT2SuiteError)  # bad input: the command line prints it as one line


def test_too_long_input_is_an_error():
    model = GPT2LMModel(GPT2Config.from_preset("tiny", n_positions=16)).eval()
    with pytest.raises(ValueError, match="exceeds the model's n_positions=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_out_of_range_ids_are_an_error():
    model = GPT2LMModel(GPT2Config.from_preset("tiny")).eval()
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 8192\).*max 8192"):
        model(torch.tensor([[1, 2, 8192]]))
    with pytest.raises(ValueError, match="min -1"):
        model(torch.tensor([[-1, 2]]))


def test_checkpoint_with_wrong_shapes_is_an_error(tmp_path):
    GPT2LMModel(GPT2Config.from_preset("tiny")).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["n_embd"] = 128
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path)


def test_truncated_checkpoint_is_an_error(tmp_path):
    GPT2LMModel(GPT2Config.from_preset("tiny")).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(tmp_path)


def test_missing_model_folder_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path)
