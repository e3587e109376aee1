"""Tokens per character of English, German and French text for the current backbone's tokenizer and for BPEs of
several sizes trained on a corpus config (by default the v2 default corpus), plus what each vocabulary costs the
default 6 x 384 backbone (embedding share of the parameters, LM-head share of the training FLOPs and, with
--time-steps, the measured CPU training speed).

    .venv/bin/python bench/tokenizer_v2.py [--config configs/pretrain/default.yaml] [--vocab 8192 16384]
        [--current results/backbones/default] [--cache-dir .dev/corpus_cache] [--time-steps 3] [--json OUT]

Each BPE is the one `prepare_corpus` trains for the config with `corpus.tokenizer.vocab_size` set to the size (so it
prepares, or finds in the cache, the whole corpus at that size). The text measured is held out of every tokenizer's
training: the corpus' own validation documents of the sources named in TEXTS (text files: the last 1/val_every of
each book's lines; JSONL: every val_every-th record of the train split), never a validation or test split file.
Tokens are counted without special tokens; tokens/char = tokens / characters over all documents of a column.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# column -> the corpus source (by its `name`) whose held-out documents are measured
TEXTS = {
    "en books": "gutenberg",
    "de books": "gutenberg_de",
    "fr books": "gutenberg_fr",
    "en captions": "multi30k_train_en",
    "de captions": "multi30k_train_de",
    "fr captions": "multi30k_train_fr",
}
PRESET = "small-cpu"  # 6 layers x 384: the default backbone's shape
SEQ_LEN = 512  # the default backbone's training length, for the FLOPs estimate


def held_out_texts(corpus) -> dict[str, list[str]]:
    from gpt2core.pretrain.corpus import iter_documents

    by_name = {s.name: (i, s) for i, s in enumerate(corpus.sources)}
    out = {}
    for column, name in TEXTS.items():
        if name not in by_name:
            raise SystemExit(f"the corpus has no source named {name!r} (sources: {', '.join(map(str, by_name))}); "
                             "edit TEXTS in bench/tokenizer_v2.py")
        i, src = by_name[name]
        out[column] = [t for t, is_val in iter_documents(src, i, corpus.val_every) if is_val]
    return out


def tokens_per_char(tok, docs: list[str]) -> float:
    enc = tok.backend_tokenizer.encode_batch(docs, add_special_tokens=False)
    return sum(len(e.ids) for e in enc) / sum(len(d) for d in docs)


def train_tok_per_s(vocabs: list[int], steps: int, rounds: int = 3) -> dict[int, float]:
    """Median training tokens/s (fp32, batch 8 x 256, forward + backward + AdamW) of the 6 x 384 shape per vocab,
    the vocabularies timed in alternating rounds so that background load hits each alike."""
    import torch
    import torch.nn.functional as F

    from gpt2core.config import GPT2Config
    from gpt2core.model import GPT2LMModel

    torch.set_flush_denormal(True)
    runs = {}
    for v in vocabs:
        torch.manual_seed(0)
        model = GPT2LMModel(GPT2Config.from_preset(PRESET, vocab_size=v)).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        data = torch.randint(0, v, (8, 257), generator=torch.Generator().manual_seed(0))
        runs[v] = (model, opt, data)

    def step(v: int) -> None:
        model, opt, data = runs[v]
        logits = model(input_ids=data[:, :-1]).logits
        F.cross_entropy(logits.flatten(0, 1), data[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    rates: dict[int, list[float]] = {v: [] for v in vocabs}
    for v in vocabs:
        step(v)  # warm-up
    for _ in range(rounds):
        for v in vocabs:
            t0 = time.perf_counter()
            for _ in range(steps):
                step(v)
            rates[v].append(steps * 8 * 256 / (time.perf_counter() - t0))
    return {v: statistics.median(r) for v, r in rates.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/pretrain/default.yaml", help="pretraining config (its corpus)")
    ap.add_argument("--vocab", type=int, nargs="+", default=[8192, 16384], help="BPE sizes to train on the corpus")
    ap.add_argument("--current", default="results/backbones/default", help="the current tokenizer's folder")
    ap.add_argument("--cache-dir", help="override corpus.cache_dir (where prepared corpora are cached)")
    ap.add_argument("--time-steps", type=int, default=0, help="also time N CPU training steps per round per vocab")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    from gpt2core.config import GPT2Config
    from gpt2core.pretrain.config import load_config
    from gpt2core.pretrain.corpus import prepare_corpus
    from gpt2core.pretrain.prepared import read_manifest
    from gpt2core.tokenizer import load_tokenizer

    corpus = load_config(args.config).corpus
    if args.cache_dir:
        corpus = dataclasses.replace(corpus, cache_dir=args.cache_dir)
    texts = held_out_texts(corpus)
    print(f"held-out text of {args.config}'s corpus (validation documents, val_every={corpus.val_every}):")
    for column, docs in texts.items():
        print(f"  {column:12s} {TEXTS[column]:18s} {len(docs):5d} documents, {sum(map(len, docs)):>9,} characters")

    tokenizers = [(f"current ({args.current})", load_tokenizer(args.current), None)]
    for v in args.vocab:
        cfg = dataclasses.replace(corpus, tokenizer=dataclasses.replace(corpus.tokenizer, vocab_size=v, path=None))
        t0 = time.time()
        folder = prepare_corpus(cfg, progress=False)
        m = read_manifest(folder)
        print(f"  BPE {v}: {folder} ({time.time() - t0:.0f} s now; prepared in {m['seconds']} s)")
        tokenizers.append((f"v2 BPE {v}", load_tokenizer(folder / "tokenizer"), m))

    rows = []
    for label, tok, m in tokenizers:
        shape = GPT2Config.from_preset(PRESET, vocab_size=len(tok))
        n, emb = shape.num_parameters(), len(tok) * shape.n_embd
        rows.append({
            "tokenizer": label, "vocab": len(tok),
            "tokens_per_char": {c: round(tokens_per_char(tok, d), 4) for c, d in texts.items()},
            "params": n, "embedding_share": emb / n,
            "head_flops_share": 6 * emb / shape.flops_per_token(SEQ_LEN),
            "corpus_train_tokens": m["tokens"]["train"] if m else None,
        })
    if args.time_steps:
        speed = train_tok_per_s(sorted({r["vocab"] for r in rows}), args.time_steps)
        for r in rows:
            r["cpu_train_tok_per_s"] = round(speed[r["vocab"]])

    cols = list(TEXTS)
    head = ["tokenizer", "vocab", *cols, "params (6x384)", "embedding share", "head FLOPs share", "corpus train tokens"]
    if args.time_steps:
        head.append("CPU train tok/s")
    print("\ntokens per character (lower is better)\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["tokenizer"], f"{r['vocab']:,}", *(f"{r['tokens_per_char'][c]:.3f}" for c in cols),
                 f"{r['params'] / 1e6:.2f}M", f"{100 * r['embedding_share']:.1f}%",
                 f"{100 * r['head_flops_share']:.1f}%",
                 f"{r['corpus_train_tokens']:,}" if r["corpus_train_tokens"] else "-"]
        if args.time_steps:
            cells.append(f"{r['cpu_train_tok_per_s']:,}")
        print("| " + " | ".join(cells) + " |")
    if args.time_steps:
        import torch

        print(f"\nCPU: fp32, batch 8 x 256, {torch.get_num_threads()} thread(s), median of 3 rounds of "
              f"{args.time_steps} steps; CPU seconds per 1M characters of text = tokens/char x 1e6 / (tok/s):")
        for r in rows:
            per = {c: r["tokens_per_char"][c] * 1e6 / r["cpu_train_tok_per_s"] for c in cols if "books" in c}
            print(f"  {r['tokenizer']:40s} " + "  ".join(f"{c} {s:6.0f} s" for c, s in per.items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"config": args.config, "texts": {
            c: {"source": TEXTS[c], "documents": len(d), "chars": sum(map(len, d))} for c, d in texts.items()},
            "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
