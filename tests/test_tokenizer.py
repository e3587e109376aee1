import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gzip
import json
import re
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, GPT2TokenizerFast

from gpt2core.errors import GPT2SuiteError
from gpt2core.tokenizer import EOT, TokenizerError, load_tokenizer, tokenizer_hash, train_tokenizer

regex = pytest.importorskip("regex")  # \p{L} in GPT-2's pre-tokenisation pattern; a transformers dependency

SHARED_DATA = Path(
    os.environ.get("GPT2SUITE_DATA_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)
GPT2_DIR = SHARED_DATA / "tokenizers" / "gpt2"
SHAKESPEARE = SHARED_DATA / "corpus" / "tinyshakespeare" / "input.txt.gz"

needs_gpt2 = pytest.mark.skipif(not (GPT2_DIR / "vocab.json").is_file(), reason=f"no GPT-2 files in {GPT2_DIR}")
needs_corpus = pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"no corpus at {SHAKESPEARE}")

VARIED = (
    "Héllo wörld! Ça va? naïve café, Ævar Þór, Ελληνικά, русский текст, עברית.\n"
    "中文测试：你好，世界。日本語のテキスト、한국어 텍스트.\n"
    "Emoji: 😀 👍🏽 👩‍👩‍👧‍👦 🏳️‍🌈 👨🏽‍💻 ❤️ (ZWJ sequences)\n"
    "def f(x):\n\tif x > 3.14159:\n\t\treturn 1,000,000\n    else:\n        return [x ** 2 for _ in range(10)]\n"
    "Numbers: 3.14159, 1,000,000, 2024-11-30, 0x1F600, -42e-3.\n"
    "spaces:     five, tabs:\t\there,   \n\n\n   trailing   \n"
    "She said \"don't\"; we'll see. It's 'quoted' .<|endoftext|>Next document starts here.\n"
    "<|endoftext|>"
)


def _bytes_to_unicode() -> dict[int, str]:
    # OpenAI's encoder.py: printable bytes map to themselves, the others to chr(256 + n).
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class ReferenceEncoder:
    """OpenAI's GPT-2 encoder algorithm in pure Python: an implementation independent of `tokenizers`."""

    PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

    def __init__(self, folder: Path):
        self.encoder = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")[1:]
        self.ranks = {tuple(line.split()): i for i, line in enumerate(x for x in lines if x)}
        self.byte_encoder = _bytes_to_unicode()

    def _bpe(self, token: str) -> tuple[str, ...]:
        word = tuple(token)
        while len(word) > 1:
            best = min(zip(word, word[1:]), key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for k, part in enumerate(text.split(EOT)):
            if k:
                ids.append(self.encoder[EOT])
            for piece in self.PAT.findall(part):
                token = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
                ids.extend(self.encoder[t] for t in self._bpe(token))
        return ids


def _rust_bpe(folder: Path) -> Tokenizer:
    tok = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.add_special_tokens([EOT])
    return tok


# ---------------------------------------------------------------- OpenAI's GPT-2 files


@pytest.fixture(scope="module")
def gpt2_tok():
    if not (GPT2_DIR / "vocab.json").is_file():
        pytest.skip(f"no GPT-2 files in {GPT2_DIR}")
    return load_tokenizer(GPT2_DIR)


@needs_gpt2
@pytest.mark.parametrize(
    "text, ids", [("Hello world", [15496, 995]), (" Hello world", [18435, 995]), ("<|endoftext|>", [50256])]
)
def test_gpt2_reference_ids(gpt2_tok, text, ids):
    assert gpt2_tok.encode(text) == ids


@needs_gpt2
def test_gpt2_matches_independent_encoders(gpt2_tok):
    ours = gpt2_tok.encode(VARIED)
    direct = GPT2TokenizerFast(vocab=str(GPT2_DIR / "vocab.json"), merges=str(GPT2_DIR / "merges.txt"))
    assert direct.encode(VARIED) == ours
    assert _rust_bpe(GPT2_DIR).encode(VARIED).ids == ours
    assert ReferenceEncoder(GPT2_DIR).encode(VARIED) == ours
    assert ours.count(50256) == 2
    assert len(ours) > 100  # a broken (1-token) tokenizer would give []


@needs_gpt2
def test_gpt2_roundtrip_and_specials(gpt2_tok):
    assert gpt2_tok.decode(gpt2_tok.encode(VARIED)) == VARIED
    assert len(gpt2_tok) == 50257
    assert gpt2_tok.eos_token == gpt2_tok.bos_token == gpt2_tok.unk_token == gpt2_tok.pad_token == EOT
    assert gpt2_tok.eos_token_id == gpt2_tok.pad_token_id == 50256
    assert gpt2_tok.padding_side == "right"


@needs_gpt2
def test_padding_side(gpt2_tok):
    left = load_tokenizer(GPT2_DIR, padding_side="left")
    for tok, pad_at in ((gpt2_tok, -1), (left, 0)):
        batch = tok(["Hi", "Hello there, world"], padding=True)
        assert batch["input_ids"][0][pad_at] == 50256
        assert batch["attention_mask"][0][pad_at] == 0
        assert batch["attention_mask"][1] == [1] * len(batch["input_ids"][1])
    with pytest.raises(ValueError, match="padding_side"):
        load_tokenizer(GPT2_DIR, padding_side="middle")


@needs_gpt2
def test_hash_follows_content_not_format(gpt2_tok, tmp_path):
    h = tokenizer_hash(GPT2_DIR)
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    assert tokenizer_hash(gpt2_tok) == h
    gpt2_tok.save_pretrained(tmp_path)  # tokenizer.json instead of vocab.json + merges.txt
    assert tokenizer_hash(tmp_path) == h
    # One merge fewer is a different tokenizer.
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "vocab.json").write_bytes((GPT2_DIR / "vocab.json").read_bytes())
    merges = (GPT2_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()
    (tmp_path / "merges.txt").write_text("\n".join(merges[:-1]) + "\n", encoding="utf-8")
    assert tokenizer_hash(tmp_path) != h


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    if not SHAKESPEARE.is_file():
        pytest.skip(f"no corpus at {SHAKESPEARE}")
    out = tmp_path_factory.mktemp("tok1000")
    tok = train_tokenizer([SHAKESPEARE], 1000, out, show_progress=False)  # the .gz itself, streamed
    return out, tok


def test_trained_files_in_gpt2_format(trained):
    out, _ = trained
    assert sorted(p.name for p in out.iterdir()) == [
        "merges.txt", "tokenizer.json", "tokenizer_config.json", "vocab.json",
    ]  # no temporary folder left behind
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    # vocab_size counts everything: 256 bytes + 743 merged tokens + <|endoftext|>.
    assert len(vocab) == 1000
    assert sorted(vocab.values()) == list(range(1000))
    assert vocab[EOT] == 999  # last, as GPT-2's 50256
    by_id = sorted(vocab, key=vocab.get)
    assert by_id[:256] == list(_bytes_to_unicode().values())  # GPT-2's byte order (encoder.py)

    lines = (out / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#version: 0.2"
    merges = [line.split(" ") for line in lines[1:]]
    assert len(merges) == 1000 - 257
    assert all(len(m) == 2 and m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab for m in merges)


@needs_gpt2
def test_trained_byte_ids_match_gpt2(trained):
    out, _ = trained
    ours = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    openai = json.loads((GPT2_DIR / "vocab.json").read_text(encoding="utf-8"))
    assert sorted(ours, key=ours.get)[:256] == sorted(openai, key=openai.get)[:256]


def test_trained_loaders_agree(trained):
    out, tok = trained
    ids = tok.encode(VARIED)
    assert GPT2TokenizerFast(vocab=str(out / "vocab.json"), merges=str(out / "merges.txt")).encode(VARIED) == ids
    assert AutoTokenizer.from_pretrained(str(out)).encode(VARIED) == ids
    assert _rust_bpe(out).encode(VARIED).ids == ids
    assert ReferenceEncoder(out).encode(VARIED) == ids
    assert load_tokenizer(out).encode(VARIED) == ids
    assert tokenizer_hash(out) == tokenizer_hash(tok)


def test_trained_tokenizer_behaviour(trained):
    _, tok = trained
    assert len(tok) == 1000
    assert tok.encode(EOT) == [999]
    assert tok.eos_token_id == tok.pad_token_id == tok.bos_token_id == 999
    # Byte-level: text never seen in training (emoji, CJK) still roundtrips exactly.
    assert tok.decode(tok.encode(VARIED)) == VARIED
    # It learned Shakespeare: far fewer tokens than bytes.
    line = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    assert len(tok.encode(line)) < len(line.encode("utf-8")) / 2.5
    assert tok.encode(" the") == [tok.convert_tokens_to_ids("Ġthe")]


@needs_corpus
def test_gz_txt_and_jsonl_inputs(tmp_path):
    with gzip.open(SHAKESPEARE, "rt", encoding="utf-8") as f:
        text = f.read(200_000)
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    with gzip.open(tmp_path / "a.txt.gz", "wt", encoding="utf-8") as f:
        f.write(text)
    plain = train_tokenizer([tmp_path / "a.txt"], 400, tmp_path / "plain", show_progress=False)
    gz = train_tokenizer([str(tmp_path / "a.txt.gz")], 400, tmp_path / "gz", show_progress=False)
    assert (tmp_path / "plain" / "merges.txt").read_text() == (tmp_path / "gz" / "merges.txt").read_text()
    assert plain.get_vocab() == gz.get_vocab()

    docs = text.split("\n\n")
    with gzip.open(tmp_path / "d.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(docs))
    js = train_tokenizer([tmp_path / "d.jsonl.gz"], 400, tmp_path / "gz", show_progress=False)  # overwrites
    assert len(js) == 400 and js.decode(js.encode(VARIED)) == VARIED
    assert load_tokenizer(tmp_path / "gz").get_vocab() == js.get_vocab()


# ---------------------------------------------------------------- bad input


def test_missing_input_file_is_named(tmp_path):
    missing = tmp_path / "nope.txt.gz"
    with pytest.raises(TokenizerError, match=re.escape(str(missing))):
        train_tokenizer([missing], 500, tmp_path / "out", show_progress=False)
    with pytest.raises(ValueError, match="no input files"):
        train_tokenizer([], 500, tmp_path / "out", show_progress=False)


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with gzip.open(tmp_path / "empty.txt.gz", "wt", encoding="utf-8"):
        pass
    with pytest.raises(ValueError, match="corpus is empty"):
        train_tokenizer([tmp_path / "empty.txt", tmp_path / "empty.txt.gz"], 500, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out" / "vocab.json").exists()


def test_bad_vocab_size_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("some text\n", encoding="utf-8")
    with pytest.raises(ValueError, match="257"):
        train_tokenizer([tmp_path / "a.txt"], 256, tmp_path / "out", show_progress=False)
    (tmp_path / "b.jsonl").write_text('{"text": "ok"}\n{"body": "no text field"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape("b.jsonl:2")):
        train_tokenizer([tmp_path / "b.jsonl"], 300, tmp_path / "out", show_progress=False)


def test_small_corpus_warns_and_still_works(tmp_path):
    (tmp_path / "a.txt").write_text("to be or not to be\n" * 50, encoding="utf-8")
    with pytest.warns(UserWarning, match="asked for"):
        tok = train_tokenizer([tmp_path / "a.txt"], 500, tmp_path / "out", show_progress=False)
    assert 257 < len(tok) < 500
    assert tok.encode(EOT) == [len(tok) - 1]
    assert tok.decode(tok.encode(VARIED)) == VARIED


def test_load_errors_name_the_folder(tmp_path):
    with pytest.raises(TokenizerError, match=re.escape(str(tmp_path)) + ".*tokenizer.json.*vocab.json"):
        load_tokenizer(tmp_path)
    missing = tmp_path / "absent"
    with pytest.raises(GPT2SuiteError, match=re.escape(str(missing))):  # bad input: one line on the command line
        load_tokenizer(missing)


def test_load_rejects_tiny_vocab(tmp_path):
    # What a wrongly loaded tokenizer looks like: a handful of tokens instead of >= 257.
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1, "ab": 2}), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="only 4 tokens"):
        load_tokenizer(tmp_path)
