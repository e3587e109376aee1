"""Conditional generation (translation, summarization): rows `id`, `source`, `references` (gold targets; the
first is the training target).

Fine-tuning trains the backbone's own LM head on `source + separator` (the prompt) then `" " + target + EOS`,
with the loss on target tokens only; a long source is cut (keeping its start by default) so that prompt and
target fit. Prediction decodes greedily (the backbone's fast KV-cache loop) or with beams, until EOS or a stop
string, at most `max_target_tokens`. Prompting generates the same way after the prompt.
"""

from __future__ import annotations

from typing import Any

from tasks.data.spec import TaskSpec
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
        if settings.num_beams > 1:
            gen_args.update(num_beams=settings.num_beams, do_sample=False, early_stopping=True)
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
