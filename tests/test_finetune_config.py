"""The fine-tuning config: its layers (defaults < defaults.yaml < the task's file < overrides), per-method blocks,
`method_fields` (what a run's cache key hashes), and errors that name the key and the file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpt2core.errors import ConfigError
from tasks.data.registry import available_tasks, get_task
from tasks.errors import MethodError
from tasks.kinds import get_kind
from tasks.methods.finetune import load_finetune_config, method_fields
from tasks.methods.finetune.config import CONFIG_DIR, NOT_RESULTS

REPO = Path(__file__).resolve().parents[1]
SPECS = [get_task(name) for name in available_tasks()]
FINETUNABLE = [s for s in SPECS if get_kind(s.kind).finetune_methods]  # language modelling has none


def test_config_errors_name_the_key_and_file(tmp_path):
    spec = FINETUNABLE[0]
    cases = {
        "batch_size: many\n": r"batch_size.*integer",
        "methods:\n  lora:\n    alpah: 4\n": r"methods\.lora.*unknown key 'alpah'.*Did you mean 'alpha'",
        "methods:\n  lora:\n    lora_r: 4\n": r"methods\.lora\.lora_r.*now methods\.lora\.r",
        "methods:\n  prefix:\n    r: 4\n": r"'methods\.prefix\.r' is a lora setting, not a prefix one",
        "r: 4\n": r"'r' is a lora setting, write it under methods\.lora",
        "lora: {r: 4}\n": r"go under methods\.lora",
        "methods:\n  qlora: {}\n": r"unknown method 'qlora'",
        "methods: [lora]\n": r"'methods' must map",
    }
    for i, (text, pattern) in enumerate(cases.items()):
        path = tmp_path / f"c{i}.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=pattern) as info:
            load_finetune_config(spec, "lora", path)
        assert str(info.value).startswith(str(path)), text  # every message names the file
    with pytest.raises(ConfigError, match=r"overrides.*unknown key 'epoch'.*Did you mean 'epochs'"):
        load_finetune_config(spec, "lora", overrides={"epoch": 1})
    with pytest.raises(ConfigError, match=r"overrides: 'r' is a lora setting, not a prefix one"):
        load_finetune_config(spec, "prefix", overrides={"r": 4})
    with pytest.raises(ConfigError, match="does not exist"):
        load_finetune_config(spec, "lora", tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"methods\.lora\.r: must be at least 1"):
        load_finetune_config(spec, "lora", overrides={"r": 0})
    with pytest.raises(MethodError, match="unknown method 'lorra'"):
        load_finetune_config(spec, "lorra")


def test_config_layers(tmp_path):
    defaults = yaml.safe_load((CONFIG_DIR / "defaults.yaml").read_text())
    for spec in FINETUNABLE:  # every shipped config loads for every applicable method, each layer in its place
        own = CONFIG_DIR / f"{spec.name}.yaml"
        task_layer = (yaml.safe_load(own.read_text()) or {}) if own.is_file() else {}
        for method in get_kind(spec.kind).finetune_methods:
            cfg = load_finetune_config(spec, method)
            layers = [defaults, defaults["methods"].get(method) or {}, task_layer,
                      (task_layer.get("methods") or {}).get(method) or {}]
            expected: dict = {}
            for layer in layers:
                expected.update({k: v for k, v in layer.items() if k != "methods"})
            for key, value in expected.items():
                got = getattr(cfg, key) if hasattr(cfg, key) else getattr(getattr(cfg, method), key)
                assert got == pytest.approx(value) if isinstance(value, float) else got == value, (spec.name, key)
    spec = FINETUNABLE[0]
    own = tmp_path / "c.yaml"
    own.write_text("lr: 0.1\nmethods:\n  lora: {r: 2}\n  prefix: {num_virtual_tokens: 5}\n")
    cfg = load_finetune_config(spec, "lora", own, overrides={"epochs": 1, "alpha": 4})
    # --config replaces the task's file (max_length: the dataclass default), not defaults.yaml (targets).
    assert (cfg.max_length, cfg.lr, cfg.lora.r, cfg.lora.alpha, cfg.epochs) == (256, 0.1, 2, 4, 1.0)
    assert cfg.lora.targets == defaults["methods"]["lora"]["targets"]


def test_method_fields_hold_only_what_defines_the_run(tmp_path):
    spec = FINETUNABLE[0]
    same, other = tmp_path / "same.yaml", tmp_path / "other-lora.yaml"
    same.write_text("lr: 0.01\n")
    other.write_text("lr: 0.01\nmethods:\n  lora: {r: 2, targets: [c_attn]}\n")
    base = {m: load_finetune_config(spec, m) for m in ("full", "lora", "prefix")}
    # A LoRA setting re-keys a LoRA run and nothing else.
    lora_changed = {m: load_finetune_config(spec, m, other) for m in base}
    unchanged = {m: load_finetune_config(spec, m, same) for m in base}
    for m in base:
        changed = method_fields(lora_changed[m], m) != method_fields(unchanged[m], m)
        assert changed == (m == "lora"), m
    assert "lora" not in method_fields(base["prefix"], "prefix") and "prefix" in method_fields(base["prefix"], "prefix")
    assert not {"lora", "prompt", "prefix"} & set(method_fields(base["full"], "full"))
    # Fields that do not change a result do not change the key either; every other field does.
    quiet = load_finetune_config(spec, "lora", overrides={"progress": False, "threads": 1, "logging_steps": 99})
    assert method_fields(quiet, "lora") == method_fields(base["lora"], "lora")
    assert not set(NOT_RESULTS) & set(method_fields(quiet, "lora"))
    assert method_fields(load_finetune_config(spec, "lora", overrides={"seed": 7}), "lora") != \
        method_fields(base["lora"], "lora")
    json.dumps(method_fields(base["lora"], "lora"))  # plain JSON: what a cache key hashes


def test_importing_the_finetune_api_does_not_import_torch():
    """The CLI's help and the leaderboard's planning import these; torch and transformers wait for a run."""
    code = ("import sys, tasks.methods.finetune, tasks.methods.adapters, tasks.methods.evaluate, tasks.cli.finetune; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
