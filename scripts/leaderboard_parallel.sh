#!/usr/bin/env bash
# Run a leaderboard config as several processes, one per group of tasks, then render it once.
#   scripts/leaderboard_parallel.sh configs/leaderboard/full.yaml "squad scitldr sst2" "bbc-news trec wikitext2"
# Each group first runs the methods in $FIRST (default: full fine-tuning and LoRA, so that the most wanted cells
# land even if the run is cut short) on its tasks one by one in the order given, then the rest of its cells (a failed cell is reported and the others still run). Records are shared through <out>/runs: the
# cache makes every step resumable, so rerunning the same command does only what is missing.
# One torch thread per process (the config's `threads`): give it as many groups as there are free cores.
set -uo pipefail
cd "$(dirname "$0")/.."
GPT2SUITE=${GPT2SUITE:-.venv/bin/gpt2suite}
FIRST=${FIRST:-finetune:full finetune:lora}
LOGS=${LOGS:-runs/leaderboard/logs}
OUT=${OUT:-runs/leaderboard}  # `OUT=results` publishes (make leaderboard-full does)
config=$1
shift
mkdir -p "$LOGS"
pids=()
i=0
for group in "$@"; do
  i=$((i + 1))
  task_args=()
  for t in $group; do task_args+=(--task "$t"); done
  method_args=()
  for m in $FIRST; do method_args+=(--method "$m"); done
  (
    # The first methods task by task in the group's order (a slow task last lets the others land first).
    for t in $group; do
      # shellcheck disable=SC2086
      $GPT2SUITE leaderboard --config "$config" --out "$OUT" --task "$t" "${method_args[@]}"
    done
    $GPT2SUITE leaderboard --config "$config" --out "$OUT" "${task_args[@]}"
  ) > "$LOGS/group$i.log" 2>&1 &
  pids+=($!)
  echo "group $i ($group): pid ${pids[-1]}, log $LOGS/group$i.log"
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
$GPT2SUITE leaderboard --config "$config" --out "$OUT" --render-only || status=1
exit $status
