"""Decoding settings of generation tasks: the fast loop's repetition guards against transformers' `generate`, the
spec's `generation:` decoding keys (checked, hashed, flowing into predictions) and what records are told."""

import dataclasses
import re

import pytest
import torch
import yaml

from gpt2core.errors import ModelInputError
from tasks.data.registry import available_tasks, get_task, load_spec, spec_fields
from tasks.data.spec import DECODING_DEFAULTS
from tasks.errors import TaskError
from tasks.kinds import get_kind
from tasks.kinds.conditional_generation import ConditionalGeneration, generate_args

VOCAB = 300
GENERATION_TASKS = [n for n, p in available_tasks().items()
                    if isinstance(get_kind(load_spec(p).kind), ConditionalGeneration)]


def _left_padded(pads=(0, 3, 9, 15), width=20, seed=4):
    ids = torch.randint(0, VOCAB - 1, (len(pads), width), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    for row, pad in enumerate(pads):
        mask[row, :pad] = 0
        ids[row, :pad] = VOCAB - 1
    return ids, mask


GUARDS = [dict(no_repeat_ngram_size=3), dict(no_repeat_ngram_size=1), dict(no_repeat_ngram_size=2),
          dict(repetition_penalty=8.0), dict(repetition_penalty=0.7, no_repeat_ngram_size=2)]


@pytest.mark.parametrize("guard", GUARDS, ids=lambda g: ",".join(f"{k}={v}" for k, v in g.items()))
def test_fast_loop_guards_equal_transformers_token_for_token(pair, guard):
    hf, ours = pair
    ids, mask = _left_padded()
    ref = hf.generate(ids, attention_mask=mask, max_new_tokens=40, do_sample=False, eos_token_id=None, **guard)
    fast = ours.generate(ids, attention_mask=mask, max_new_tokens=40, eos_token_id=[], **guard)
    slow = ours.generate(ids, attention_mask=mask, max_new_tokens=40, eos_token_id=[], fast=False, **guard)
    assert fast.tolist() == ref.tolist() == slow.tolist()
    plain = ours.generate(ids, attention_mask=mask, max_new_tokens=40, eos_token_id=[])
    assert plain.tolist() != fast.tolist()  # the guard changed something, so the comparison can fail


def test_fast_loop_guards_with_eos_and_one_unpadded_row(pair):
    hf, ours = pair
    ids = torch.randint(0, VOCAB - 1, (1, 12), generator=torch.Generator().manual_seed(7))
    free = ours.generate(ids, max_new_tokens=30, eos_token_id=[], no_repeat_ngram_size=2)
    eos = int(free[0, 20])  # a token the guarded run produces: as EOS it stops the row there
    ref = hf.generate(ids, max_new_tokens=30, do_sample=False, eos_token_id=eos, pad_token_id=0, no_repeat_ngram_size=2)
    got = ours.generate(ids, max_new_tokens=30, eos_token_id=eos, pad_token_id=0, no_repeat_ngram_size=2)
    assert got.tolist() == ref.tolist() and got.shape[1] <= 21


def test_no_repeated_ngram_survives_the_guard(pair):
    _, ours = pair
    ids = torch.randint(0, VOCAB - 1, (2, 10), generator=torch.Generator().manual_seed(1))
    out = ours.generate(ids, max_new_tokens=60, eos_token_id=[], no_repeat_ngram_size=3)
    for row in out.tolist():
        grams = [tuple(row[i:i + 3]) for i in range(len(row) - 2)]
        assert len(grams) == len(set(grams))


def test_guards_apply_before_sampling_and_bad_values_are_errors(pair):
    _, ours = pair
    ids = torch.randint(0, VOCAB - 1, (1, 10), generator=torch.Generator().manual_seed(2))
    out = ours.generate(ids, max_new_tokens=40, do_sample=True, top_k=3, seed=5, eos_token_id=[],
                        no_repeat_ngram_size=1)
    assert len(set(out[0].tolist())) == out.shape[1]  # 1-grams: no token twice in prompt + output
    with pytest.raises(ModelInputError, match="no_repeat_ngram_size must be 0"):
        ours.generate(ids, max_new_tokens=2, no_repeat_ngram_size=-1)
    with pytest.raises(ModelInputError, match="repetition_penalty must be a finite positive number"):
        ours.generate(ids, max_new_tokens=2, repetition_penalty=0.0)


# ---- the spec's decoding keys ------------------------------------------------------------------------------


def _spec_file(tmp_path, **generation):
    name = GENERATION_TASKS[0]
    data = yaml.safe_load(open(available_tasks()[name]).read())
    data["generation"] = {**data.get("generation", {}), **generation}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("bad, match", [
    (dict(num_beams=0), "generation.num_beams must be a whole number, 1 (greedy) or more, got 0"),
    (dict(num_beams=2.5), "num_beams"),
    (dict(no_repeat_ngram_size=-1), "generation.no_repeat_ngram_size must be a whole number, 0 (no guard) or more"),
    (dict(repetition_penalty=0), "generation.repetition_penalty must be a finite number above 0"),
    (dict(length_penalty=float("nan")), "generation.length_penalty: expected a finite number"),  # typed_config
    (dict(num_beems=4), "num_beams"),  # an unknown key: did-you-mean
])
def test_bad_decoding_settings_are_one_line_errors(tmp_path, bad, match):
    with pytest.raises(TaskError, match=re.escape(match)) as info:
        load_spec(_spec_file(tmp_path, **bad))
    assert "\n" not in str(info.value)


def test_every_generation_task_states_its_decoding_and_the_key_hashes_only_non_defaults(tmp_path):
    assert GENERATION_TASKS
    for name in GENERATION_TASKS:
        gen = get_task(name).generation
        stated = {k: getattr(gen, k) for k in DECODING_DEFAULTS if getattr(gen, k) != DECODING_DEFAULTS[k]}
        assert {k: v for k, v in spec_fields(get_task(name))["generation"].items() if k in DECODING_DEFAULTS} == stated
    greedy = load_spec(_spec_file(tmp_path, **DECODING_DEFAULTS))
    plain = dataclasses.replace(greedy, generation=dataclasses.replace(greedy.generation, **DECODING_DEFAULTS))
    beam = dataclasses.replace(greedy, generation=dataclasses.replace(greedy.generation, num_beams=4))
    assert not set(DECODING_DEFAULTS) & set(spec_fields(greedy)["generation"])
    assert spec_fields(plain) == spec_fields(greedy) != spec_fields(beam)
    for name in available_tasks():  # other kinds hash no decoding keys, so their cells keep their keys
        if name not in GENERATION_TASKS:
            assert not set(DECODING_DEFAULTS) & set(spec_fields(get_task(name))["generation"])


def test_decoding_resolves_spec_then_settings_and_names_itself():
    from tasks.evaluation.predict import PredictSettings, decoding

    spec = get_task(GENERATION_TASKS[0])
    spec = dataclasses.replace(spec, generation=dataclasses.replace(spec.generation, num_beams=4, length_penalty=0.8,
                                                                    no_repeat_ngram_size=3, repetition_penalty=1.0))
    d = decoding(spec, PredictSettings())
    assert d == {"name": "beam 4 (length penalty 0.8), no repeated 3-grams", "num_beams": 4, "length_penalty": 0.8,
                 "no_repeat_ngram_size": 3, "repetition_penalty": 1.0}
    assert generate_args(d) == {"num_beams": 4, "length_penalty": 0.8, "do_sample": False, "early_stopping": True,
                                "no_repeat_ngram_size": 3}
    greedy = decoding(spec, PredictSettings(num_beams=1, no_repeat_ngram_size=0, repetition_penalty=1.2))
    assert greedy["name"] == "greedy, repetition penalty 1.2" and generate_args(greedy) == {"repetition_penalty": 1.2}
    assert generate_args(decoding(spec, PredictSettings(num_beams=1, no_repeat_ngram_size=0))) == {}  # fast loop
    with pytest.raises(TaskError, match="^num_beams must be a whole number"):
        decoding(spec, PredictSettings(num_beams=0))
    other = next(n for n in available_tasks() if n not in GENERATION_TASKS)
    assert decoding(get_task(other), PredictSettings()) is None


def test_predictions_follow_the_spec_decoding(tiny_backbone):
    from gpt2core.checkpoint import load_model
    from gpt2core.tokenizer import load_tokenizer
    from tasks.data.load import load_split
    from tasks.evaluation.predict import PredictSettings, predict

    tok, model = load_tokenizer(tiny_backbone), load_model(tiny_backbone)
    base = get_task(GENERATION_TASKS[0])
    greedy_spec = dataclasses.replace(base, generation=dataclasses.replace(base.generation, **DECODING_DEFAULTS))
    beam_spec = dataclasses.replace(base, generation=dataclasses.replace(base.generation, num_beams=3,
                                                                         no_repeat_ngram_size=2))
    rows = load_split(base, base.eval_split).select(range(3))
    s = PredictSettings(max_length=64, max_new_tokens=8)
    from_spec = predict(beam_spec, model, tok, rows, s)
    from_settings = predict(greedy_spec, model, tok, rows, dataclasses.replace(s, num_beams=3, no_repeat_ngram_size=2))
    greedy = predict(greedy_spec, model, tok, rows, s)
    assert from_spec == from_settings
    assert predict(beam_spec, model, tok, rows, dataclasses.replace(s, num_beams=1, no_repeat_ngram_size=0)) == greedy
    assert from_spec != greedy  # random weights repeat themselves: the 2-gram guard changes the output


def test_every_generation_spec_states_the_decoding_chosen_on_validation():
    for name in GENERATION_TASKS:
        raw = yaml.safe_load(open(available_tasks()[name]).read())["generation"]
        assert set(DECODING_DEFAULTS) <= set(raw), f"{name}: state {', '.join(DECODING_DEFAULTS)} in generation:"
