#!/usr/bin/env bash
# Fine-tune the default backbone on every task with the given methods, on budgets that fit a 2-core CPU.
#   scripts/finetune_all.sh lora full          # one process, one thread; records go to results/runs/
# Budgets (train examples are a seeded subset of train; eval examples the first N of a fixed shuffle):
#   sst2 4000 train, 1 epoch, all 872 validation | trec all 4,884 train, 2 epochs, all 500 test
#   squad 2000 train, 1 epoch, 1000 validation   | multi30k-en-de/fr 4000 train, 1 epoch, 500 test
#   scitldr all 1,992 train, 1 epoch, 300 test    | bbc-news all 1,807 train, 1 epoch, all 189 test
set -uo pipefail
cd "$(dirname "$0")/.."
GPT2SUITE=${GPT2SUITE:-.venv/bin/gpt2suite}
MODEL=${MODEL:-results/backbones/default}
declare -A BUDGET=(
  [sst2]="--max-train-examples 4000 --epochs 1"
  [trec]="--epochs 2"
  [squad]="--max-train-examples 2000 --epochs 1 --max-eval-examples 1000"
  [multi30k-en-de]="--max-train-examples 4000 --epochs 1 --max-eval-examples 500 --set val_examples=100"
  [multi30k-en-fr]="--max-train-examples 4000 --epochs 1 --max-eval-examples 500 --set val_examples=100"
  [scitldr]="--epochs 1 --max-eval-examples 300 --set val_examples=60"
  [bbc-news]="--epochs 1 --set val_examples=60"
)
for method in "$@"; do
  for task in sst2 trec multi30k-en-de multi30k-en-fr squad scitldr bbc-news; do
    echo "=== $(date +%T) $task $method"
    # shellcheck disable=SC2086
    $GPT2SUITE finetune --task "$task" --method "$method" --model "$MODEL" ${BUDGET[$task]} --set threads=1 \
      --no-progress || echo "FAILED: $task $method"
  done
done
