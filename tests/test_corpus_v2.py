"""The v2 default corpus: German and French train text in, no validation or test split file of any dataset, and a
small corpus of German sources prepares and round-trips."""

import gzip
import json
from pathlib import Path


from gpt2core.paths import expand_path
from gpt2core.pretrain.config import config_from_dict, load_config
from gpt2core.pretrain.corpus import prepare_corpus, source_files
from gpt2core.pretrain.prepared import load_tokens, read_manifest
from gpt2core.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
# every pretraining config (corpus_*.yaml are corpus parts that they include)
CONFIGS = [p for p in sorted((REPO / "configs" / "pretrain").rglob("*.yaml")) if not p.name.startswith("corpus_")]
HELD_OUT_WORDS = ("validation", "valid", "val", "test", "dev")  # split names that must never feed pretraining


def _default_configs():
    """The pretraining configs that use the default corpus."""
    cfgs = [(p, load_config(p)) for p in CONFIGS]
    return [(p, c) for p, c in cfgs if c.corpus.name == "default"]


def test_default_corpus_has_german_and_french_train_text(shared_data):
    configs = _default_configs()
    assert {p.name for p, _ in configs} >= {"default.yaml", "gpu.yaml", "m_v8k.yaml"}
    for path, cfg in configs:
        by_name = {s.name: (i, s) for i, s in enumerate(cfg.corpus.sources)}
        files = {name: source_files(s, i) for name, (i, s) in by_name.items()}
        rel = {name: [f.relative_to(shared_data).as_posix() for f in fs] for name, fs in files.items()}
        assert rel["multi30k_train_de"] == ["translation/multi30k_en_de/train.jsonl.gz"], path
        assert rel["multi30k_train_fr"] == ["translation/multi30k_en_fr/train.jsonl.gz"], path
        assert by_name["multi30k_train_de"][1].field == "translation.de"
        assert by_name["multi30k_train_fr"][1].field == "translation.fr"
        assert len(rel["gutenberg_de"]) == 39 and all(f.startswith("corpus/gutenberg_de/") for f in rel["gutenberg_de"])
        assert len(rel["gutenberg_fr"]) == 33 and all(f.startswith("corpus/gutenberg_fr/") for f in rel["gutenberg_fr"])
        every = [f for fs in rel.values() for f in fs]
        assert all(f.endswith((".txt.gz", ".jsonl.gz")) and "manifest" not in f for f in every)
        # Multi30k's English once (the en side of en_fr train repeats en_de's)
        assert sum(s.field == "translation.en" for s in cfg.corpus.sources) == 1


def test_default_corpus_reads_no_validation_or_test_split(shared_data):
    for path, cfg in _default_configs():
        held_out = {expand_path(f).resolve() for f in cfg.ppl_eval}
        for i, src in enumerate(cfg.corpus.sources):
            for f in source_files(src, i):
                stem = f.name.split(".")[0].lower()
                assert not any(stem.startswith(w) for w in HELD_OUT_WORDS), f"{path}: corpus reads {f}"
                assert "wikitext" not in str(f) and f.resolve() not in held_out, f"{path}: corpus reads {f}"
                # a task dataset folder (one with split files): only its train file
                if (f.parent / "train.jsonl.gz").is_file() and f.parent.parent.name != "corpus":
                    assert f.name == "train.jsonl.gz", f"{path}: corpus reads {f}"


def test_a_german_corpus_prepares(shared_data, tmp_path):
    de = shared_data / "translation" / "multi30k_en_de" / "train.jsonl.gz"
    cfg = config_from_dict({"preset": "tiny", "corpus": {
        "name": "v2-tiny",
        "sources": [
            {"path": str(shared_data / "corpus" / "gutenberg_de" / "*.txt.gz"), "name": "gutenberg_de",
             "max_docs": 2, "max_chars": 20_000},
            {"path": str(de), "name": "multi30k_train_de", "field": "translation.de", "max_docs": 400},
        ],
        "tokenizer": {"vocab_size": 512}, "val_every": 20, "cache_dir": str(tmp_path / "cache")},
        "progress": False}, "test")
    folder = prepare_corpus(cfg.corpus, progress=False, log=lambda *_: None)
    m = read_manifest(folder)
    assert m["vocab_size"] == 512 and [s["name"] for s in m["sources"]] == ["gutenberg_de", "multi30k_train_de"]
    books, captions = m["sources"]
    assert books["docs"] == {"train": 2, "val": 2} and captions["docs"] == {"train": 380, "val": 20}
    assert all(s["tokens"]["train"] > 0 and s["tokens"]["val"] > 0 for s in m["sources"])
    tok = load_tokenizer(folder / "tokenizer")
    with gzip.open(de, "rt", encoding="utf-8") as f:
        rows = [json.loads(next(f))["translation"]["de"] for _ in range(400)]
    val_text = tok.decode(load_tokens(folder, "val").tolist())
    assert rows[19] in val_text and rows[18] not in val_text  # every 20th caption (1-based) is held out
    umlauts = "Größere Jungen überqueren fröhlich die Straße; Mädchen spielen Fußball."
    assert tok.decode(tok.encode(umlauts)) == umlauts
    # trained on German, the BPE merges its letters: fewer tokens than the text's UTF-8 bytes by far
    assert len(tok.encode(umlauts)) < 0.6 * len(umlauts.encode("utf-8"))
