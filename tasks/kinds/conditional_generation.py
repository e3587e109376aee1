"""Conditional generation (translation, summarization): rows `id`, `source`, `references` (gold targets; the
first is the training target).

Fine-tuning trains the backbone's own LM head on `source + separator` (the prompt) then `" " + target + EOS`,
with the loss on target tokens only; a long source is cut (keeping its start by default) so that prompt and
target fit. Prediction decodes as the spec's `generation:` block says (`decoding`): greedily (the backbone's fast
KV-cache loop) or with `num_beams` beams and a `length_penalty` (transformers' beam search), optionally guarded
against repetition loops (`no_repeat_ngram_size`, `repetition_penalty`), until EOS or a stop string, at most
`max_target_tokens`. Prompting (zero/few-shot) decodes greedily after the prompt, whatever the spec's decoding
(`prompt_scoring` says so in the record).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from tasks.data.spec import DECODING_DEFAULTS, TaskSpec
from tasks.errors import DataError, TaskError
from tasks.kinds.base import PredictSettings, TaskKind, batches, pad, require_rows


def prompt_ids(tokenizer: Any, spec: TaskSpec, source: str, max_prompt_tokens: int, keep: str = "start") -> list[int]:
    """Token ids of `source + separator`, the source cut to fit `max_prompt_tokens` (the separator stays).

    `keep="start"` drops the end of a long source (news and abstracts put the gist first); "end" drops its start.
    """
    sep = tokenizer(spec.separator, add_special_tokens=False)["input_ids"] if spec.separator else []
    whole = tokenizer(source + spec.separator, add_special_tokens=False)["input_ids"]
    if len(whole) <= max_prompt_tokens:
        return whole
    room = max_prompt_tokens - len(sep)
    if room < 1:
        raise DataError(f"max prompt length {max_prompt_tokens} leaves no room for the source of a {spec.name} "
                        "example")
    src = tokenizer(source, add_special_tokens=False)["input_ids"]
    src = src[:room] if keep == "start" else src[-room:]
    return src + sep


def target_ids(tokenizer: Any, target: str, max_target_tokens: int) -> list[int]:
    """` target` + EOS, the target cut to `max_target_tokens` (EOS is always kept so the model learns to stop)."""
    ids = tokenizer(" " + target.strip(), add_special_tokens=False)["input_ids"][:max_target_tokens]
    return ids + [tokenizer.eos_token_id]


def clean_generation(text: str, stops: list[str]) -> str:
    """The generated target: up to the first stop string, without surrounding spaces."""
    for stop in stops:
        text = text.split(stop, 1)[0]
    return text.strip()


def check_decoding(values: dict[str, Any], where: str) -> None:
    """Refuse decoding settings that make no sense, one line naming the key (`where` + key) and the valid range."""
    def whole(x: Any) -> bool:
        return isinstance(x, numbers.Integral) and not isinstance(x, bool)

    def number(x: Any) -> bool:
        return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)

    beams, lp = values["num_beams"], values["length_penalty"]
    ngram, rp = values["no_repeat_ngram_size"], values["repetition_penalty"]
    if not (whole(beams) and beams >= 1):
        raise TaskError(f"{where}num_beams must be a whole number, 1 (greedy) or more, got {beams!r}")
    if not number(lp):
        raise TaskError(f"{where}length_penalty must be a finite number (1.0: none), got {lp!r}")
    if not (whole(ngram) and ngram >= 0):
        raise TaskError(f"{where}no_repeat_ngram_size must be a whole number, 0 (no guard) or more, got {ngram!r}")
    if not (number(rp) and rp > 0):
        raise TaskError(f"{where}repetition_penalty must be a finite number above 0 (1.0: none), got {rp!r}")


def decoding_name(d: dict[str, Any]) -> str:
    """A short human name of a decoding: "greedy", "beam 4 (length penalty 1.0), no repeated 3-grams", ..."""
    name = "greedy" if d["num_beams"] == 1 else f"beam {d['num_beams']} (length penalty {d['length_penalty']})"
    if d["no_repeat_ngram_size"]:
        name += f", no repeated {d['no_repeat_ngram_size']}-grams"
    if d["repetition_penalty"] != 1.0:
        name += f", repetition penalty {d['repetition_penalty']}"
    return name


def generate_args(d: dict[str, Any]) -> dict[str, Any]:
    """`generate` arguments of a decoding: only those that differ from greedy, so plain greedy keeps the fast loop
    (which also takes the two repetition guards; beam search goes to transformers' `generate`)."""
    out: dict[str, Any] = {}
    if d["num_beams"] > 1:
        out.update(num_beams=d["num_beams"], length_penalty=float(d["length_penalty"]), do_sample=False,
                   early_stopping=True)
    if d["no_repeat_ngram_size"]:
        out["no_repeat_ngram_size"] = d["no_repeat_ngram_size"]
    if d["repetition_penalty"] != 1.0:
        out["repetition_penalty"] = float(d["repetition_penalty"])
    return out


class ConditionalGeneration(TaskKind):
    name = "conditional_generation"
    row_fields = ("id", "source", "references")
    document_field = "source"
    default_metrics = ("bleu", "chrf")
    baselines = ("lead-k", "copy-source")
    finetune_methods = ("full", "lora", "prompt", "prefix")  # no task head, so no head-only ("linear") training
    prompting = True

    def validate(self, spec: TaskSpec) -> None:
        super().validate(spec)
        if spec.max_target_tokens < 1:
            raise TaskError("generation.max_target_tokens must be at least 1")
        check_decoding({k: getattr(spec.generation, k) for k in DECODING_DEFAULTS}, "generation.")

    def make_row(self, spec: TaskSpec, record: dict[str, Any], index: int) -> dict[str, Any]:
        refs = self.field(spec, record, "references", index)
        refs = [refs] if isinstance(refs, str) else list(refs or [])
        refs = [str(r).strip() for r in refs if str(r).strip()]
        if not refs:
            raise DataError(f"task {spec.name!r}: record {index} has no reference text "
                            f"(field {spec.fields['references']!r})")
        return {"id": str(self.field(spec, record, "id", index)),
                "source": str(self.field(spec, record, "source", index)).strip(), "references": refs}

    def references(self, spec: TaskSpec, row: dict[str, Any]) -> list[str]:
        return list(row["references"])

    # -- fine-tuning
    def train_features(self, spec: TaskSpec, rows: Any, tokenizer: Any, cfg: Any, max_length: int) -> Any:
        """`input_ids`, `attention_mask`, `labels` (-100 on the prompt), the first reference as the target."""
        require_rows(rows, spec, "generation training")
        max_target = cfg.max_target_tokens or spec.max_target_tokens
        if max_target + 2 >= max_length:
            raise DataError(f"max_target_tokens ({max_target}) must be well below max_length ({max_length})")
        keep = cfg.keep_source

        def encode(batch: dict[str, list]) -> dict[str, list]:
            out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
            for source, refs in zip(batch["source"], batch["references"]):
                tgt = target_ids(tokenizer, refs[0], max_target)
                prompt = prompt_ids(tokenizer, spec, source, max_length - len(tgt), keep)
                out["input_ids"].append(prompt + tgt)
                out["attention_mask"].append([1] * (len(prompt) + len(tgt)))
                out["labels"].append([-100] * len(prompt) + tgt)
            return out

        return rows.map(encode, batched=True, remove_columns=rows.column_names, desc="tokenizing")

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorForSeq2Seq

        # Pads labels with -100 as well; works for decoder-only inputs too.
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)

    def decoding(self, spec: TaskSpec, settings: PredictSettings) -> dict[str, Any]:
        """The decoding `predict` uses: the spec's `generation:` settings, each overridden by a `settings` value
        that is not None; `name` says it in words (what run records carry)."""
        d = {k: getattr(spec.generation, k) if getattr(settings, k) is None else getattr(settings, k)
             for k in DECODING_DEFAULTS}
        check_decoding(d, "")
        return {"name": decoding_name(d), **d}

    def predict(self, spec: TaskSpec, model: Any, tokenizer: Any, rows: Any, settings: PredictSettings) -> list[str]:
        import torch

        max_new = settings.max_new_tokens or spec.max_target_tokens
        max_prompt = settings.max_length - settings.reserved_positions - max_new
        if max_prompt < 8:
            raise DataError(f"max_length {settings.max_length} leaves {max_prompt} prompt tokens after {max_new} new "
                            f"tokens and {settings.reserved_positions} virtual tokens; raise max_length or lower "
                            "max_new_tokens")
        prompts = [prompt_ids(tokenizer, spec, src, max_prompt, settings.keep_source) for src in rows["source"]]
        preds: list[str] = [""] * len(prompts)
        device = next(model.parameters()).device
        stops = list(spec.generation.stop)
        gen_args: dict[str, Any] = dict(max_new_tokens=max_new, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id, stop_strings=stops or None,
                                        tokenizer=tokenizer)
        gen_args.update(generate_args(self.decoding(spec, settings)))
        with torch.inference_mode():
            for batch in batches([len(p) for p in prompts], settings.batch_size):
                ids, mask = pad(tokenizer, [prompts[i] for i in batch], "left", device)
                out = model.generate(input_ids=ids, attention_mask=mask, **gen_args)
                for j, i in enumerate(batch):
                    text = tokenizer.decode(out[j, ids.shape[1]:].tolist(), skip_special_tokens=True)
                    preds[i] = clean_generation(text, stops)
        return preds

    # -- prompting
    def render_input(self, spec: TaskSpec, row: dict[str, Any]) -> str:
        return spec.prompt.input.format(source=row["source"])

    def render_answer(self, spec: TaskSpec, row: dict[str, Any]) -> str:
        return spec.prompt.answer.format(target=row["references"][0])
