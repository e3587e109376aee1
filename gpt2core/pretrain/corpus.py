"""Corpus preparation: text sources -> (trained) tokenizer -> `train.bin` / `val.bin` token memmaps + manifest.

A prepared corpus is a folder `<cache_dir>/<name>-<key>/` holding `tokenizer/`, `train.bin`, `val.bin` (uint16,
or uint32 for vocabularies over 65535) and `manifest.json`. The key hashes the corpus config, the sha256 of every
input file and the tokenizer, so preparing again with the same inputs does no work. The folder is built beside
and renamed into place, so it is either complete or absent.

Documents are separated by `<|endoftext|>` (one token before each document). The validation split is held out by
document: in JSONL sources every `val_every`-th document (1-based), in text files (one document per file) the
last 1/`val_every` of the file's lines.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from gpt2core.errors import ConfigError, CorpusError
from gpt2core.hashing import share_position
from gpt2core.io import atomic_write_json
from gpt2core.paths import DATA_DIR_VAR, DEFAULT_DATA_DIR, data_dir, expand_path
from gpt2core.pretrain.config import CorpusConfig, KeepRule, SourceConfig
from gpt2core.pretrain.prepared import open_prepared

FORMAT_VERSION = 1  # bump when the document/split rules or the file layout change: it is part of the cache key
EOT = "<|endoftext|>"
KEEP_RULE = (
    "a source's keep {key, shares, part, seed} keeps the records whose gpt2core.hashing.share_position("
    "str(record[key]), resolution, seed) = int(sha256(text)[:8 hex digits], 16) % resolution (text = the value, "
    "or f'{seed}:{value}' when seed is not 0; resolution = 10 ** the most decimal places among shares) lies in "
    "range `part` of the consecutive share ranges [0, resolution)"
)
_ENCODE_BATCH_CHARS = 1 << 20  # characters handed to the tokenizer per batch
_CHUNK_CHARS = 1 << 15  # long documents are cut into pieces of about this size (at safe points) for threading


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_jsonl(path: Path) -> bool:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.endswith(".jsonl")


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")


def _data_dir_note() -> str:
    return f"${{DATA_DIR}} is {DATA_DIR_VAR}={data_dir() or DEFAULT_DATA_DIR}"


def read_text(path: str | os.PathLike, max_chars: int | None = None) -> str:
    """A text file's text (`.txt` or `.txt.gz`), the first `max_chars` characters when given."""
    path = Path(path)
    try:
        with _open_text(path) as f:
            return f.read(max_chars if max_chars is not None else -1)
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not valid UTF-8 ({e}); re-encode it as UTF-8") from None
    except FileNotFoundError:
        raise CorpusError(f"{path} does not exist; check the path ({_data_dir_note()})") from None
    except (OSError, EOFError) as e:  # e.g. a truncated or non-gzip .gz file
        raise CorpusError(f"cannot read {path}: {e}; restore or replace the file") from None


def source_files(src: SourceConfig, index: int) -> list[Path]:
    """The files a source names (a path or a glob), sorted; a missing path is an error naming it."""
    if src.path is None:
        return []
    pattern = str(expand_path(src.path))
    files = sorted(Path(p) for p in glob.glob(pattern)) if glob.has_magic(pattern) else [Path(pattern)]
    files = [f for f in files if not f.name.endswith(".md")]
    if not files or not all(f.is_file() for f in files):
        missing = next((f for f in files if not f.is_file()), pattern)
        raise CorpusError(f"corpus.sources[{index}]: {missing} does not exist (path {src.path!r}; "
                          f"{_data_dir_note()}); fix the path or set {DATA_DIR_VAR}")
    for f in files:
        if not (f.name.endswith((".txt", ".txt.gz")) or _is_jsonl(f)):
            raise ConfigError(f"corpus.sources[{index}]: {f} is neither .txt(.gz) nor .jsonl(.gz)")
    return files


def _lookup(record: Any, dotted: str, where: str) -> Any:
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            keys = list(record)[:10] if isinstance(record, dict) else type(record).__name__
            raise CorpusError(f"{where}: no field {dotted!r} in the record (keys: {keys}); check the source's "
                              "field (or keep.key)")
        value = value[part]
    return value


def _get_field(record: Any, dotted: str, where: str) -> str:
    value = _lookup(record, dotted, where)
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    if not isinstance(value, str):
        raise CorpusError(f"{where}: field {dotted!r} is {type(value).__name__}, expected text")
    return value


def _keeper(rule: KeepRule | None) -> Callable[[dict, str], bool]:
    """Whether a record passes the source's `keep` rule (every record does without one)."""
    if rule is None:
        return lambda rec, where: True
    resolution, lo, hi = rule.span()
    return lambda rec, where: lo <= share_position(str(_lookup(rec, rule.key, where)), resolution, rule.seed) < hi


def iter_documents(src: SourceConfig, index: int, val_every: int = 200) -> Iterator[tuple[str, bool]]:
    """(text, is_val) for every document of one source, in a fixed order."""
    seen: set[str] = set()
    n_docs = 0
    keeps = _keeper(src.keep)

    def records() -> Iterator[tuple[dict, str]]:
        if src.dataset is not None:
            try:
                import datasets
            except ImportError as e:
                raise ConfigError(f"corpus.sources[{index}]: a 'dataset' source needs the datasets package") from e
            ds = datasets.load_dataset(src.dataset, src.dataset_config, split=src.split)
            for i, rec in enumerate(ds):
                yield rec, f"{src.dataset}[{i}]"
            return
        for path in source_files(src, index):
            if not _is_jsonl(path):
                continue
            try:
                with _open_text(path) as f:
                    for lineno, line in enumerate(f, 1):
                        if line.strip():
                            try:
                                yield json.loads(line), f"{path}:{lineno}"
                            except json.JSONDecodeError as e:
                                msg = f"{path}:{lineno}: not valid JSON ({e}); fix or drop the line"
                                raise CorpusError(msg) from None
            except UnicodeDecodeError as e:
                raise CorpusError(f"{path} is not valid UTF-8 ({e}); re-encode it as UTF-8") from None
            except (OSError, EOFError) as e:
                raise CorpusError(f"cannot read {path}: {e}; restore or replace the file") from None

    # Text files: one document each; its last 1/val_every of lines is held out as a validation document.
    for path in source_files(src, index) if src.path is not None else []:
        if _is_jsonl(path):
            continue
        if src.keep is not None:
            raise ConfigError(f"corpus.sources[{index}].keep: applies to JSONL records, but {path} is a text file")
        if src.max_docs is not None and n_docs >= src.max_docs:
            return
        text = read_text(path, src.max_chars)
        if not text.strip():
            continue
        n_docs += 1
        lines = text.splitlines(keepends=True)
        n_val = -(-len(lines) // val_every) if len(lines) > 1 else 0
        train, val = "".join(lines[: len(lines) - n_val]), "".join(lines[len(lines) - n_val:])
        if train.strip():
            yield train, False
        if val.strip():
            yield val, True

    # JSONL / datasets: every val_every-th kept document (1-based) is validation.
    for rec, where in records():
        if src.max_docs is not None and n_docs >= src.max_docs:
            return
        if not keeps(rec, where):
            continue
        text = _get_field(rec, src.field, where)
        if not text.strip():
            continue
        if src.dedup:
            if text in seen:
                continue
            seen.add(text)
        n_docs += 1
        yield text, n_docs % val_every == 0


def _chunks(text: str) -> list[str]:
    """Cut a long text into pieces that tokenize exactly as the whole does.

    A cut goes right after a newline that follows a non-space and precedes a letter or digit: GPT-2's pre-tokenizer
    makes that newline a piece of its own, so pieces (and BPE merges, which never cross pieces) are unchanged.
    """
    if len(text) <= _CHUNK_CHARS:
        return [text]
    out, start = [], 0
    while len(text) - start > _CHUNK_CHARS:
        cut = start + _CHUNK_CHARS
        while cut < len(text) and not (text[cut - 1] == "\n" and text[cut].isalnum() and not text[cut - 2].isspace()):
            cut += 1
        if cut >= len(text):
            break
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def corpus_key(cfg: CorpusConfig) -> tuple[str, dict[str, Any]]:
    """(cache key, its inputs): the corpus config, every input file's sha256 and the tokenizer."""
    from gpt2core.tokenizer import tokenizer_hash

    files = []
    for i, src in enumerate(cfg.sources):
        for f in source_files(src, i):
            files.append({"source": i, "path": str(f), "sha256": file_sha256(f), "bytes": f.stat().st_size})
    conf = asdict(cfg)
    conf.pop("cache_dir"), conf.pop("prepared_dir")
    if cfg.tokenizer.path:
        tok = {"path": str(expand_path(cfg.tokenizer.path)), "hash": tokenizer_hash(expand_path(cfg.tokenizer.path))}
    else:
        tok = {"train": {"vocab_size": cfg.tokenizer.vocab_size, "min_frequency": cfg.tokenizer.min_frequency}}
    conf.pop("tokenizer")
    for s in conf["sources"]:
        s.pop("path")  # files are keyed by content (sha256), not by where they lie
    inputs = {"format_version": FORMAT_VERSION, "corpus": conf, "files": [
        {k: v for k, v in f.items() if k != "path"} for f in files], "tokenizer": tok}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return key, {**inputs, "file_paths": [f["path"] for f in files]}


def prepare_corpus(cfg: CorpusConfig, *, progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Prepare (or find in the cache) the token memmaps of a corpus; returns the prepared folder.

    With `cfg.prepared_dir` set, that folder (a prepared corpus, or packed shards, unpacked beside) is used as is.
    """
    if cfg.prepared_dir:
        return open_prepared(expand_path(cfg.prepared_dir), expand_path(cfg.cache_dir))
    if not cfg.sources:
        raise ConfigError("corpus.sources: no sources given")
    key, inputs = corpus_key(cfg)
    cache = expand_path(cfg.cache_dir)
    out = cache / f"{cfg.name}-{key}"
    if (out / "manifest.json").is_file():
        log(f"corpus {cfg.name!r}: cached at {out}")
        return out
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=cache))
    try:
        _prepare_into(cfg, tmp, inputs, key, progress, log)
        if (out / "manifest.json").is_file():  # another process finished first
            return out
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"corpus {cfg.name!r}: prepared at {out}")
    return out


def _prepare_into(cfg: CorpusConfig, out: Path, inputs: dict, key: str, progress: bool,
                  log: Callable[[str], None]) -> None:
    from tqdm.auto import tqdm

    from gpt2core.tokenizer import load_tokenizer, tokenizer_hash, train_tokenizer

    t0 = time.time()
    stats: list[dict[str, Any]] = []

    def all_docs() -> Iterator[tuple[int, str, bool]]:
        for i, src in enumerate(cfg.sources):
            for text, is_val in iter_documents(src, i, cfg.val_every):
                yield i, text, is_val

    # Tokenizer: load, or train on the train documents only (written once to a temporary JSONL file).
    if cfg.tokenizer.path:
        tok = load_tokenizer(expand_path(cfg.tokenizer.path))
    else:
        docs_file = out / "train_docs.jsonl"
        n_chars = 0
        with open(docs_file, "w", encoding="utf-8") as f:
            for _, text, is_val in all_docs():
                if not is_val:
                    n_chars += len(text)
                    f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        if n_chars == 0:
            raise CorpusError(f"corpus {cfg.name!r} is empty: its sources hold no text; check corpus.sources")
        log(f"training a {cfg.tokenizer.vocab_size}-token BPE on {n_chars:,} characters")
        tok = train_tokenizer([docs_file], cfg.tokenizer.vocab_size, out / "tokenizer",
                              min_frequency=cfg.tokenizer.min_frequency, show_progress=progress)
        docs_file.unlink()
    if cfg.tokenizer.path:
        tok.save_pretrained(out / "tokenizer")
    vocab = len(tok)
    dtype = np.uint16 if vocab <= 65536 else np.uint32
    eot = tok.convert_tokens_to_ids(EOT)
    backend = tok.backend_tokenizer

    files = {"train": open(out / "train.bin", "wb"), "val": open(out / "val.bin", "wb")}
    counts = {"train": 0, "val": 0}
    per_source = [{"docs": {"train": 0, "val": 0}, "tokens": {"train": 0, "val": 0}, "chars": 0}
                  for _ in cfg.sources]
    bar = tqdm(desc=f"tokenizing {cfg.name}", unit="char", unit_scale=True, disable=not progress)
    batch: list[tuple[int, str, bool]] = []

    def flush() -> None:
        pieces, owner = [], []
        for j, (_, text, _) in enumerate(batch):
            for piece in _chunks(text):
                pieces.append(piece)
                owner.append(j)
        encoded = backend.encode_batch_fast(pieces, add_special_tokens=False) if hasattr(
            backend, "encode_batch_fast") else backend.encode_batch(pieces, add_special_tokens=False)
        ids_per_doc: list[list[int]] = [[eot] for _ in batch]
        for j, enc in zip(owner, encoded):
            ids_per_doc[j].extend(enc.ids)
        for (i, text, is_val), ids in zip(batch, ids_per_doc):
            split = "val" if is_val else "train"
            files[split].write(np.asarray(ids, dtype=dtype).tobytes())
            counts[split] += len(ids)
            per_source[i]["docs"][split] += 1
            per_source[i]["tokens"][split] += len(ids)
            per_source[i]["chars"] += len(text)
            bar.update(len(text))
        batch.clear()

    try:
        n = 0
        for doc in all_docs():
            batch.append(doc)
            n += len(doc[1])
            if n >= _ENCODE_BATCH_CHARS:
                flush()
                n = 0
        flush()
    finally:
        for f in files.values():
            f.close()
        bar.close()
    if counts["train"] == 0:
        raise CorpusError(f"corpus {cfg.name!r} is empty: its sources hold no text; check corpus.sources")
    if counts["val"] == 0:
        raise CorpusError(f"corpus {cfg.name!r}: no validation documents (val_every={cfg.val_every}); add text or "
                          "lower corpus.val_every")

    for i, src in enumerate(cfg.sources):
        stats.append({"index": i, "name": src.name or (Path(src.path).name if src.path else src.dataset),
                      "path": src.path, "field": src.field,
                      "keep": src.keep.describe() if src.keep else None, **per_source[i]})
    manifest = {
        "name": cfg.name,
        "key": key,
        "format_version": FORMAT_VERSION,
        "dtype": np.dtype(dtype).name,
        "vocab_size": vocab,
        "eot_id": eot,
        "tokenizer_hash": tokenizer_hash(tok),
        "tokens": counts,
        "sha256": {s: file_sha256(out / f"{s}.bin") for s in ("train", "val")},
        "sources": stats,
        "files": [{"path": p, "sha256": f["sha256"], "bytes": f["bytes"]}
                  for p, f in zip(inputs["file_paths"], inputs["files"])],
        "split_rule": (f"JSONL sources: every {cfg.val_every}th kept document (1-based) is validation; text files: "
                       f"one document each, whose last ceil(lines/{cfg.val_every}) lines are validation"),
        "keep_rule": KEEP_RULE,
        "document_separator": EOT + " before every document",
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_json(out / "manifest.json", manifest, indent=1)
