"""Backbones as vanilla Hugging Face GPT-2 folders: plain transformers and lm-evaluation-harness open them without
this project, the suite loads them (and its own format) with identical logits, and `import gpt2core` is enough for
transformers' Auto classes to open the project's own format."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2core.checkpoint import load_model, save_hf_folder
from gpt2core.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "results" / "backbones" / "default"
TEXT = "The quick brown fox jumps over the lazy dog. Ein Hund läuft. Le chat dort."


def _run_python(code: str, cwd: Path) -> str:
    """`code` in a fresh interpreter started outside the repository (so that nothing of the project is
    importable by accident from the working directory); returns its stdout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


VANILLA = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({folder!r})
model = AutoModelForCausalLM.from_pretrained({folder!r}, dtype=torch.float32).eval()
ids = tok({text!r}, return_tensors="pt").input_ids
with torch.no_grad():
    logits = model(ids).logits
torch.save({{"ids": ids, "logits": logits}}, {out!r})
print(type(model).__name__, sorted(k for k in sys.modules if k.split(".")[0] in ("gpt2core", "tasks")))
"""


def test_saved_folder_opens_in_plain_transformers(tmp_path, tiny_backbone):
    ours = load_model(tiny_backbone)
    folder = save_hf_folder(ours, load_tokenizer(tiny_backbone), tmp_path / "hf", max_shard_size="200KB")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}
    assert len(list(folder.glob("*.safetensors"))) > 1  # sharded as asked

    printed = _run_python(VANILLA.format(folder=str(folder), text=TEXT, out=str(tmp_path / "out.pt")), tmp_path)
    assert printed.split()[0] == "GPT2LMHeadModel"
    assert printed.strip().endswith("[]"), f"the project was imported: {printed}"  # no gpt2core, no tasks
    got = torch.load(tmp_path / "out.pt")
    assert got["ids"].tolist() == load_tokenizer(tiny_backbone)(TEXT, return_tensors="pt").input_ids.tolist()
    rng = torch.get_rng_state()
    back_model = load_model(folder)
    # loading draws no random numbers: a seeded fine-tuning run is the same whichever format its backbone has
    assert torch.equal(torch.get_rng_state(), rng)
    with torch.no_grad():
        # the other direction: the vanilla folder back into GPT2LMModel gives the very logits of the original
        back = back_model(got["ids"]).logits
        original = ours(got["ids"]).logits
    assert torch.equal(back, original)
    torch.testing.assert_close(got["logits"], original, atol=1e-4, rtol=1e-4)  # transformers' own kernels


def test_a_transformers_gpt2_folder_loads_with_its_logits(tmp_path, tiny_backbone):
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(HFConfig(vocab_size=1024, n_positions=128, n_embd=64, n_layer=2, n_head=2)).eval()
    hf.save_pretrained(tmp_path / "hf")
    ids = torch.randint(0, 1024, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "hf")(ids).logits, hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_import_gpt2core_registers_the_auto_classes(tmp_path, tiny_backbone):
    """Our own format (model_type gpt2core) opens through AutoModelForCausalLM after a bare `import gpt2core`,
    in either import order, and that import alone stays light (no torch, no transformers)."""
    for first, second in (("import gpt2core", "from transformers import AutoModelForCausalLM"),
                          ("from transformers import AutoModelForCausalLM", "import gpt2core")):
        code = (f"import sys\n{first}\n{second}\n"
                f"m = AutoModelForCausalLM.from_pretrained({str(tiny_backbone)!r})\nprint(type(m).__name__)")
        env_code = code.replace("import sys\n", f"import sys; sys.path.insert(0, {str(REPO)!r})\n")
        assert _run_python(env_code, tmp_path).split()[-1] == "GPT2LMModel"
    light = _run_python(f"import sys; sys.path.insert(0, {str(REPO)!r}); import gpt2core; "
                        "print('torch' in sys.modules, 'transformers' in sys.modules)", tmp_path)
    assert light.split() == ["False", "False"]


def test_the_default_backbone_is_a_vanilla_gpt2_folder():
    config = json.loads((DEFAULT / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert all(f.stat().st_size <= 16 * 2**20 for f in DEFAULT.glob("*.safetensors"))
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(DEFAULT)
    assert type(model).__name__ == "GPT2LMHeadModel" and model.num_parameters() == 13_989_888


LM_EVAL_TASK = """
task: local_text
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
"""


def _our_bits_per_byte(folder: Path, texts: list[str]) -> float:
    """Each text scored whole after one <|endoftext|> (lm-evaluation-harness' rolling rule for texts shorter than
    the context), in bits per UTF-8 byte."""
    model, tok = load_model(folder), load_tokenizer(folder)
    nll = 0.0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([[tok.eos_token_id] + tok(text).input_ids])
            logits = model(ids).logits[0, :-1]
            nll += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
    return nll / (sum(len(t.encode("utf-8")) for t in texts) * math.log(2))


def test_lm_evaluation_harness_runs_on_the_default_backbone(tmp_path, shared_data):
    """`lm_eval --model hf --model_args pretrained=DIR` on the committed backbone, a local YAML task over four
    WikiText-2 test paragraphs; its bits per byte equal ours."""
    import gzip

    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is in the dev extra: pip install -e '.[dev]'")
    with gzip.open(shared_data / "corpus" / "wikitext2" / "test.txt.gz", "rt", encoding="utf-8") as f:
        texts = [line.strip() for line in f if 200 < len(line.strip()) < 1000][:4]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "local_text.yaml").write_text(LM_EVAL_TASK.format(data=data))
    cmd = [str(Path(sys.executable).with_name("lm_eval")), "--model", "hf", "--model_args",
           f"pretrained={DEFAULT},dtype=float32", "--include_path", str(tmp_path / "tasks"), "--tasks", "local_text",
           "--device", "cpu", "--batch_size", "1", "--output_path", str(tmp_path / "out")]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").rglob("results*.json")).read_text())["results"]["local_text"]
    assert results["bits_per_byte,none"] == pytest.approx(_our_bits_per_byte(DEFAULT, texts), rel=1e-4)


def test_a_task_head_keeps_the_weights_of_a_vanilla_folder(tmp_path, tiny_backbone):
    """transformers' post_init re-initialises every module not flagged as loaded: a head around a backbone read
    from a vanilla folder (built on the meta device) once got a random backbone and fine-tuned at chance."""
    from tasks.models.heads import GPT2ForSequenceClassification

    folder = save_hf_folder(load_model(tiny_backbone), load_tokenizer(tiny_backbone), tmp_path / "hf")
    backbone = load_model(folder)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    head = GPT2ForSequenceClassification.from_backbone(backbone, num_labels=3)
    after = head.backbone.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
