"""PEFT's LoRA, prompt tuning and prefix tuning work on the backbone unchanged: train a step, then generate."""

import pytest
import torch
from peft import LoraConfig, PeftModel, PrefixTuningConfig, PromptTuningConfig, TaskType, get_peft_model

from gpt2core import GPT2Config, GPT2LMModel

VOCAB = 120
METHODS = {
    "lora": lambda: LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8, target_modules=["c_attn"]),
    "prompt": lambda: PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=6),
    "prefix": lambda: PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=6),
}


def base_model(seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    model = GPT2LMModel(cfg)
    with torch.no_grad():
        model.transformer.wte.weight.mul_(10)  # peaked outputs, so greedy choices are not near-ties
    return model


def perturb_adapter(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize("method", METHODS)
def test_train_step_updates_only_the_adapter(method):
    model = get_peft_model(base_model(), METHODS[method]())
    frozen_before = model.get_base_model().transformer.h[0].mlp.c_fc.weight.clone()
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    ids = torch.randint(0, VOCAB, (3, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # a left-padded row
    out = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in trainable)
    assert any(p.grad.abs().sum() > 0 for p in trainable)  # LoRA's B starts at 0, so A's first grad is 0
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, trainable))
    assert torch.equal(model.get_base_model().transformer.h[0].mlp.c_fc.weight, frozen_before)


@pytest.mark.parametrize("method", METHODS)
def test_generation_follows_the_adapted_model(method):
    """Every generated token is the argmax of the PEFT model's own forward over the text so far, and the
    adapter changes the output (so the virtual tokens / prefix / LoRA weights are really used)."""
    plain = base_model()
    ids = torch.randint(0, VOCAB, (1, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        base_logits = plain(ids).logits[0, -1]
    model = get_peft_model(base_model(), METHODS[method]())
    perturb_adapter(model)
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
        seq = out[0].tolist()
        assert len(seq) == 18
        for i in range(10, len(seq)):
            ctx = torch.tensor([seq[:i]])
            logits = model(input_ids=ctx, attention_mask=torch.ones_like(ctx)).logits[0, -1]
            assert int(logits.argmax()) == seq[i], f"token {i} is not the adapted model's argmax"
        adapted = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]
    assert (adapted - base_logits).abs().max() > 1e-3


@pytest.mark.parametrize("method", METHODS)
def test_adapter_save_and_reload(tmp_path, method):
    model = get_peft_model(base_model(), METHODS[method]())
    perturb_adapter(model)
    model.eval()
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(base_model(), tmp_path).eval()
    with torch.no_grad():
        got = reloaded(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert torch.allclose(expected, got, atol=1e-5)
