"""GPT-2 byte-level BPE tokenizers: train one on a corpus, load one from disk, hash one.

A tokenizer folder holds GPT-2's own format (``vocab.json`` + ``merges.txt``, as OpenAI published it) and/or
Hugging Face's ``save_pretrained`` files (``tokenizer.json`` + ``tokenizer_config.json``). ``train_tokenizer``
writes both, so ``GPT2TokenizerFast(vocab=..., merges=...)`` and ``AutoTokenizer.from_pretrained(folder)`` load
the same tokenizer.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, GPT2TokenizerFast, PreTrainedTokenizerFast

from gpt2core.errors import TokenizerError

__all__ = ["EOT", "TokenizerError", "load_tokenizer", "tokenizer_hash", "train_tokenizer"]

EOT = "<|endoftext|>"
N_BYTES = 256  # byte-level BPE: every byte is a base token, so any text encodes without an unknown token
MERGES_HEADER = "#version: 0.2"
_CHUNK_CHARS = 1 << 16

# GPT-2 convention: one special token plays every role; padding reuses it (attention masks hide the pads).
_SPECIALS = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT, "pad_token": EOT}


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _is_jsonl(path: Path) -> bool:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.endswith(".jsonl")


def _iter_texts(path: Path) -> Iterator[str]:
    """Yield a file's text in pieces: chunks of whole lines for text files, one document per JSONL record."""
    try:
        with _open_text(path) as f:
            if _is_jsonl(path):
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line)["text"]
                    except (json.JSONDecodeError, KeyError, TypeError) as e:
                        raise TokenizerError(
                            f"{path}:{lineno}: expected a JSON object with a 'text' field per line ({e!r})"
                        ) from None
                    if not isinstance(text, str):
                        raise TokenizerError(f"{path}:{lineno}: 'text' is {type(text).__name__}, expected a string")
                    yield text
            else:
                # Whole lines joined into chunks rather than single lines, so that runs of newlines
                # ("\n\n" between paragraphs) reach the pre-tokenizer as GPT-2 sees them.
                buf: list[str] = []
                size = 0
                for line in f:
                    buf.append(line)
                    size += len(line)
                    if size >= _CHUNK_CHARS:
                        yield "".join(buf)
                        buf, size = [], 0
                if buf:
                    yield "".join(buf)
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{path} is not valid UTF-8 ({e}); re-encode it as UTF-8") from None
    except (OSError, EOFError) as e:  # e.g. a truncated or non-gzip .gz file
        raise TokenizerError(f"cannot read {path}: {e}; restore or replace the file") from None


def _check_files(files: Sequence[str | os.PathLike]) -> list[Path]:
    if isinstance(files, (str, os.PathLike)):  # a lone path would otherwise be read as a sequence of characters
        files = [files]
    paths = [Path(f) for f in files]
    if not paths:
        raise TokenizerError("train_tokenizer: no input files given; pass .txt, .txt.gz, .jsonl or .jsonl.gz paths")
    for p in paths:
        if not p.exists():
            raise TokenizerError(f"train_tokenizer: input file {p} does not exist; check the path")
        if not p.is_file():
            raise TokenizerError(f"train_tokenizer: input {p} is not a file; pass the files inside it")
    return paths


def _gpt2_layout(vocab: dict[str, int]) -> dict[str, int]:
    """Renumber a trained vocab like GPT-2's: 256 bytes, then merges in order, then <|endoftext|> last."""
    # The trainer puts special tokens first; GPT-2 has bytes at 0..255 and EOT at the end (50256).
    # BPE encodes by merge rank, not id, so renumbering changes no tokenisation.
    ordered = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if tok != EOT]
    ordered.append(EOT)
    return {tok: i for i, tok in enumerate(ordered)}


def train_tokenizer(
    files: Sequence[str | os.PathLike],
    vocab_size: int,
    out_dir: str | os.PathLike,
    *,
    min_frequency: int = 2,
    show_progress: bool = True,
) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE tokenizer on text files and save it into ``out_dir``.

    ``files``: plain text (``.txt``), gzip text (``.txt.gz``) or JSONL with a ``text`` field (``.jsonl``,
    ``.jsonl.gz``), streamed, never decompressed to disk. ``vocab_size`` counts everything: the 256 byte tokens,
    the merges and ``<|endoftext|>`` (GPT-2: 256 + 50000 + 1 = 50257). A corpus too small to supply enough merges
    gives a smaller vocab, with a warning. Ids follow GPT-2's layout: bytes 0..255 in GPT-2's order, merged
    tokens next, ``<|endoftext|>`` last. Writes ``vocab.json``, ``merges.txt``, ``tokenizer.json`` and
    ``tokenizer_config.json``, each by an atomic replace. Returns the tokenizer as ``load_tokenizer`` loads it.
    """
    paths = _check_files(files)
    if vocab_size < N_BYTES + 1:
        raise TokenizerError(
            f"train_tokenizer: vocab_size={vocab_size} is too small; byte-level BPE needs at least "
            f"{N_BYTES + 1} (256 byte tokens + {EOT})"
        )

    n_chars = 0

    def texts() -> Iterator[str]:
        nonlocal n_chars
        for p in paths:
            for text in _iter_texts(p):
                n_chars += len(text)
                yield text

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        # All 256 bytes, not just those seen, so that any text (emoji, CJK) still encodes and decodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    bpe.train_from_iterator(texts(), trainer=trainer)
    if n_chars == 0:
        raise TokenizerError(f"train_tokenizer: the corpus is empty (no text in {', '.join(map(str, paths))}); "
                             "pass files that hold text")

    model = json.loads(bpe.to_str())["model"]
    vocab = _gpt2_layout(model["vocab"])
    merges = _merge_lines(model)
    if len(vocab) < vocab_size:
        warnings.warn(
            f"train_tokenizer: the corpus gave only {len(vocab)} tokens of the {vocab_size} asked for "
            f"(min_frequency={min_frequency}); use more text or a smaller vocab_size",
            stacklevel=2,
        )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-tmp-", dir=out))
    try:
        _write_gpt2_files(tmp, vocab, merges)
        # tokenizer.json is built from the GPT-2 files just written, so both formats load to the same tokenizer.
        load_tokenizer(tmp).save_pretrained(tmp)
        for name in sorted(os.listdir(tmp)):
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_tokenizer(out)


def _merge_lines(bpe_model: dict) -> list[str]:
    """merges.txt lines of a tokenizers BPE model: tokenizers >= 0.20 stores merges as [a, b] pairs, older
    versions as "a b" strings."""
    return [m if isinstance(m, str) else " ".join(m) for m in bpe_model["merges"]]


def _write_gpt2_files(folder: Path, vocab: dict[str, int], merges: list[str]) -> None:
    with open(folder / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(folder / "merges.txt", "w", encoding="utf-8") as f:
        f.write(MERGES_HEADER + "\n" + "".join(m + "\n" for m in merges))


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: str | os.PathLike) -> None:
    """`tokenizer.save_pretrained(folder)` plus GPT-2's own `vocab.json` + `merges.txt`, which transformers 5
    no longer writes for a fast tokenizer and which older GPT-2 tools (and OpenAI's format) read."""
    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    _write_gpt2_files(folder, model["vocab"], _merge_lines(model))


def load_tokenizer(path: str | os.PathLike, *, padding_side: str = "right") -> PreTrainedTokenizerFast:
    """Load a GPT-2 tokenizer from a folder holding ``tokenizer.json`` or GPT-2's ``vocab.json`` + ``merges.txt``.

    ``<|endoftext|>`` becomes the bos, eos, unk and pad token. ``tokenizer.json`` wins when both formats exist.
    """
    if padding_side not in ("left", "right"):
        raise TokenizerError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    folder = Path(path)
    hint = "pass a folder written by train_tokenizer, save_pretrained, or holding GPT-2's vocab.json + merges.txt"
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise TokenizerError(f"tokenizer folder {folder} {what}; {hint}")

    tok_json, vocab, merges = folder / "tokenizer.json", folder / "vocab.json", folder / "merges.txt"
    # No clean-up on decode: it deletes spaces before punctuation, so decode(encode(text)) != text. (5.24 skips
    # it for BPE anyway, with a warning when a tokenizer_config.json asks for it; this keeps both away.)
    kwargs = dict(_SPECIALS, padding_side=padding_side, clean_up_tokenization_spaces=False)
    if tok_json.is_file():
        if (folder / "tokenizer_config.json").is_file():
            tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **kwargs)
        else:
            tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_json), **kwargs)
    elif vocab.is_file() and merges.is_file():
        # vocab=/merges= with paths, not vocab_file=/merges_file=: in transformers 5.x the latter silently
        # builds an empty BPE that encodes everything to [] (checked below as well).
        tok = GPT2TokenizerFast(vocab=str(vocab), merges=str(merges), **kwargs)
    else:
        raise TokenizerError(
            f"no tokenizer in {folder}: looked for tokenizer.json, or vocab.json + merges.txt "
            f"(found: {', '.join(sorted(os.listdir(folder))[:10]) or 'nothing'}); {hint}"
        )

    if len(tok) <= N_BYTES:
        raise TokenizerError(
            f"tokenizer loaded from {folder} has only {len(tok)} tokens (a byte-level BPE has more than {N_BYTES}); "
            "the files are truncated or were loaded the wrong way"
        )
    return tok


def tokenizer_hash(tok_or_path: PreTrainedTokenizerFast | Tokenizer | str | os.PathLike) -> str:
    """Short sha256 (16 hex digits) of everything that decides token ids; use it to key token caches.

    A tokenizer and the folder it was loaded from hash alike, whatever the file format (GPT-2's files or
    tokenizer.json), because the hash is taken over the loaded tokenizer's vocab, merges, added tokens,
    normalizer, pre-tokenizer and post-processor, not over file bytes.
    """
    if isinstance(tok_or_path, (str, os.PathLike)):
        tok_or_path = load_tokenizer(tok_or_path)
    backend = tok_or_path if isinstance(tok_or_path, Tokenizer) else tok_or_path.backend_tokenizer
    spec = json.loads(backend.to_str())
    # Decoder, padding and truncation settings do not change which ids a text gets.
    keep = {k: spec.get(k) for k in ("normalizer", "pre_tokenizer", "model", "added_tokens", "post_processor")}
    blob = json.dumps(keep, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]
