#!/usr/bin/env bash
# The suite on OpenAI's GPT-2 shape (124M, 50,257 tokens, 1,024 positions; OpenAI's tokenizer files; random
# weights, as the hub is out of reach here): time and peak memory of LoRA fine-tuning, few-shot prompting and a
# leaderboard slice on tiny budgets (the budgets of tests/test_gpt2_shape.py). Outputs under .dev/gpt2_shape.
#   scripts/gpt2_shape_path.sh            # ~2 minutes on 2 cores (1 thread)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT_DIR:-.dev/gpt2_shape}
DATA=${GPT2SUITE_DATA_DIR:-../shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
rm -rf "$OUT" && mkdir -p "$OUT"
"$PY" - "$OUT/gpt2-random" "$DATA" <<'PYEOF'
import shutil, sys, torch
from transformers import GPT2Config, GPT2LMHeadModel
out, data = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
GPT2LMHeadModel(GPT2Config()).half().save_pretrained(out)   # transformers' defaults are OpenAI's gpt2
for name in ("vocab.json", "merges.txt"):
    shutil.copy(f"{data}/tokenizers/gpt2/{name}", f"{out}/{name}")
PYEOF
M="$OUT/gpt2-random"
measure() {  # name, command...: wall seconds and peak resident memory of one command
  local name=$1; shift
  /usr/bin/time -f "$name: %e s wall, peak RSS %M KB" -o "$OUT/$name.time" "$@" > "$OUT/$name.log" 2>&1
  cat "$OUT/$name.time"
}
measure finetune-lora "$PY" -m tasks.cli.main finetune --task sst2 --method lora --model "$M" --max-train-examples 8 \
  --max-eval-examples 4 --max-steps 1 --no-progress --out "$OUT/ft" --runs-dir "$OUT/runs" \
  --set batch_size=4 --set eval_batch_size=4 --set max_length=64 --set val_examples=4
measure fewshot-2 "$PY" -m tasks.cli.main fewshot --task sst2 --shots 2 --limit 4 --model "$M" --runs-dir "$OUT/runs"
cat > "$OUT/leaderboard.yaml" <<YAML
name: gpt2-shape
models: {gpt2-random: $M}
tasks: [sst2, multi30k-en-de]
methods: [baseline:majority, few-shot:1, finetune:lora]
seeds: [0]
budgets: {max_eval_examples: 4, max_train_examples: 8, max_steps: 1, batch_size: 4, eval_batch_size: 4,
          max_length: 64, threads: 1}
task_budgets: {multi30k-en-de: {max_length: 128}}   # room for the 64 target tokens
YAML
measure leaderboard-slice "$PY" -m tasks.cli.main leaderboard --config "$OUT/leaderboard.yaml" --out "$OUT/lb" \
  --task sst2 --models-dir "$OUT/models"
measure leaderboard-slice-translation "$PY" -m tasks.cli.main leaderboard --config "$OUT/leaderboard.yaml" \
  --out "$OUT/lb" --task multi30k-en-de --models-dir "$OUT/models"
