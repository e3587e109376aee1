"""Fast generation against transformers' `generate` with identical weights."""

import subprocess
import sys

import pytest
import torch

from gpt2core import GPT2Config, GPT2LMModel, generate
from gpt2core.generation import sample_next

VOCAB = 300


def test_greedy_equals_transformers_batch1(pair):
    hf, ours = pair
    ids = torch.randint(0, VOCAB - 1, (1, 32), generator=torch.Generator().manual_seed(3))
    ref = hf.generate(ids, max_new_tokens=48, do_sample=False, eos_token_id=None, pad_token_id=0)
    got = ours.generate(ids, max_new_tokens=48, eos_token_id=[])
    assert got.shape == (1, 80)
    assert got.tolist() == ref.tolist()


def test_greedy_equals_transformers_left_padded_batch(pair):
    hf, ours = pair
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, VOCAB - 1, (4, 20), generator=g)
    mask = torch.ones_like(ids)
    for row, pad in enumerate([0, 3, 9, 15]):
        mask[row, :pad] = 0
        ids[row, :pad] = VOCAB - 1
    ref = hf.generate(ids, attention_mask=mask, max_new_tokens=30, do_sample=False, eos_token_id=None)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=30, eos_token_id=[])
    assert got.tolist() == ref.tolist()
    # Each left-padded row continues exactly as the same prompt alone, unpadded.
    for row, pad in enumerate([0, 3, 9, 15]):
        alone = ours.generate(ids[row : row + 1, pad:], max_new_tokens=30, eos_token_id=[])
        assert got[row, 20:].tolist() == alone[0, 20 - pad :].tolist()


def test_eos_stops_and_pads(pair):
    _, ours = pair
    ids = torch.randint(0, VOCAB - 1, (2, 10), generator=torch.Generator().manual_seed(5))
    free = ours.generate(ids, max_new_tokens=12, eos_token_id=[])
    eos = int(free[0, 14])  # pretend the 5th generated token of row 0 is EOS
    out = ours.generate(ids, max_new_tokens=12, eos_token_id=eos, pad_token_id=0)
    first = out[0, 10:].tolist()
    stop = first.index(eos)
    assert all(t == 0 for t in first[stop + 1 :])
    assert first[: stop + 1] == free[0, 10 : 11 + stop].tolist()


def test_stop_strings(pair):
    _, ours = pair

    class CharTokenizer:  # decodes each id to a fixed letter: enough to drive stop strings
        def decode(self, ids):
            return "".join(chr(ord("a") + i % 26) for i in ids)

    ids = torch.randint(0, VOCAB - 1, (1, 10), generator=torch.Generator().manual_seed(6))
    free = ours.generate(ids, max_new_tokens=20, eos_token_id=[])
    text = CharTokenizer().decode(free[0, 10:].tolist())
    stop = text[6:8]
    out = ours.generate(ids, max_new_tokens=20, eos_token_id=[], stop_strings=stop, tokenizer=CharTokenizer())
    got = CharTokenizer().decode(out[0, 10:].tolist())
    assert got.endswith(stop) and got == text[: text.index(stop) + len(stop)]


def test_sampling_is_seeded_and_respects_top_k():
    torch.manual_seed(0)
    ours = GPT2LMModel(GPT2Config.from_preset("tiny", vocab_size=VOCAB)).eval()  # a flat distribution
    ids = torch.randint(0, VOCAB - 1, (2, 8), generator=torch.Generator().manual_seed(7))
    kw = dict(max_new_tokens=16, do_sample=True, temperature=1.3, top_k=5, top_p=0.9, eos_token_id=[])
    a = ours.generate(ids, seed=1, **kw)
    b = ours.generate(ids, seed=1, **kw)
    c = ours.generate(ids, seed=2, **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    logits = torch.randn(4, 50)
    allowed = logits.topk(3).indices
    for seed in range(20):
        tok = sample_next(logits, True, 1.0, 3, 1.0, torch.Generator().manual_seed(seed))
        assert all(tok[i] in allowed[i] for i in range(4))


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    seen = {int(sample_next(logits, True, 1.0, 0, 0.7, torch.Generator().manual_seed(s))) for s in range(200)}
    assert seen == {0, 1}  # 0.5 + 0.3 reaches 0.7: tokens 2 and 3 are cut


def test_prompt_too_long_is_an_error():
    model = GPT2LMModel(GPT2Config.from_preset("tiny", n_positions=32))
    with pytest.raises(ValueError, match="exceeds n_positions=32"):
        generate(model, torch.zeros(1, 30, dtype=torch.long), max_new_tokens=5)


@pytest.mark.parametrize("bad, match", [(dict(temperature=-1.0), "temperature"), (dict(top_p=0.0), "top_p"),
                                        (dict(top_k=-2), "top_k"), (dict(max_new_tokens=-1), "max_new_tokens")])
def test_bad_sampling_arguments_are_errors(bad, match):
    from gpt2core.errors import ModelInputError

    model = GPT2LMModel(GPT2Config.from_preset("tiny", n_positions=32))
    with pytest.raises(ModelInputError, match=match):
        model.generate(torch.zeros(1, 4, dtype=torch.long), **{"do_sample": True, "max_new_tokens": 3, **bad})


def test_cli_generate(tmp_path, shared_data):
    from gpt2core import load_tokenizer

    tok = load_tokenizer(shared_data / "tokenizers" / "gpt2")
    model = GPT2LMModel(GPT2Config.from_preset("tiny", vocab_size=len(tok)))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    cmd = [sys.executable, "-m", "tasks.cli.main", "generate", "--model", str(tmp_path), "--prompt", "Hello world",
           "--max-new-tokens", "5"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Hello world") and len(out.stdout.strip()) > len("Hello world")
    bad = subprocess.run(cmd[:-5] + [str(tmp_path / "missing")] + cmd[-4:], capture_output=True, text=True)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
