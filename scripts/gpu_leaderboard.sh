#!/usr/bin/env bash
# The full-data leaderboard (configs/leaderboard/gpu.yaml) in one device call of at most 10 minutes on one H200
# (issue 12): GROUPS processes share the GPU, each running its tasks' FIRST methods (baselines, full fine-tuning,
# LoRA, the extractive summarizer) task by task, then every other cell of its tasks (prompting rows, then the
# other fine-tuning methods) until DEADLINE_S, when the runs are interrupted (SIGINT: every finished record stays)
# and the whole config is rendered from what finished.
#
#   scripts/gpu_leaderboard.sh pack                 # here: .dev/gpu_lb = the backbone + the task data + wheels
#   scripts/park_results.sh park                    # here: the copy that travels stays under 64 MiB
#   <device run, carry .dev/gpu_lb, timeout_s 600>: OUT_DIR=$OUT scripts/gpu_leaderboard.sh run
#   scripts/park_results.sh restore
#   cp <files_at>/lb/runs/* results/runs/ && gpt2suite leaderboard --config configs/leaderboard/gpu.yaml \
#       --out results --render-only             # publish (the records' index is rebuilt from the files)
# Tested on CPU with the tiny preset and a few examples per cell (the same cells, the same phases):
#   TINY=1 DEADLINE_S=900 OUT_DIR=.dev/gpu_lb_test PACK=.dev/gpu_lb_tiny scripts/gpu_leaderboard.sh run
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-run}
PACK=${PACK:-.dev/gpu_lb}
PY=${PYTHON:-python3}
CONFIG=${CONFIG:-configs/leaderboard/gpu.yaml}
DEADLINE_S=${DEADLINE_S:-530}   # the runs stop here; rendering and the copy back fit in the call's 600 s
FIRST=${FIRST:-baseline:majority baseline:tfidf-lr baseline:best-sentence baseline:best-sentence-span \
baseline:copy-source baseline:lead-k finetune:full finetune:lora finetune:extractive-lora finetune:extractive-full}
# Four processes: the 14M-parameter backbone leaves most of an H200 idle, so cells share it side by side.
GROUPS_LIST=${GROUPS_LIST:-"squad|sst2 trec wikitext2|multi30k-en-de multi30k-en-fr|scitldr bbc-news"}
# The wheels of what the device image lacks (its package list: .library/device/KINDS.md), the versions of .venv.
# rouge-score is published as a source archive only: it is pure Python, so its wheel is built here.
WHEELS=${WHEELS:-"datasets==5.2.0 evaluate==0.4.6 nltk==3.10.4 dill==0.4.1 multiprocess==0.70.19"}
SOURCE_WHEELS=${SOURCE_WHEELS:-"rouge-score==0.1.2"}

if [ "$MODE" = pack ]; then
  DATA=${GPT2SUITE_DATA_DIR:-../shared/data}
  rm -rf "$PACK" && mkdir -p "$PACK/data" "$PACK/wheels"
  cp -r results/backbones/default "$PACK/backbone"
  for d in classification/sst2 classification/trec qa/squad translation/multi30k_en_de translation/multi30k_en_fr \
           summarization/scitldr summarization/bbc_news_summary corpus/wikitext2; do
    mkdir -p "$PACK/data/$(dirname "$d")" && cp -r "$DATA/$d" "$PACK/data/$d"
  done
  # shellcheck disable=SC2086
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$PACK/wheels" $WHEELS || { echo "gpu_leaderboard: pip download failed"; exit 1; }
  # shellcheck disable=SC2086
  .venv/bin/python -m pip wheel -q --no-deps -w "$PACK/wheels" $SOURCE_WHEELS \
    || { echo "gpu_leaderboard: building the wheels of $SOURCE_WHEELS failed"; exit 1; }
  du -sh "$PACK" "$PACK"/*
  exit 0
fi
[ "$MODE" = run ] || { echo "usage: scripts/gpu_leaderboard.sh pack|run"; exit 2; }

OUT_DIR=${OUT_DIR:-${OUT:?set OUT_DIR}}
WORK=${WORK:-/tmp/gpu_lb}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
rm -rf "$WORK" && mkdir -p "$OUT_DIR/logs" "$WORK"
t0=$(date +%s)
if ls "$PACK"/wheels/*.whl > /dev/null 2>&1 && ! "$PY" -c "import datasets, rouge_score" 2> /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
    "$PACK"/wheels/*.whl || { echo "gpu_leaderboard: installing the carried wheels failed"; exit 1; }
  export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi
[ -d "$PACK/data" ] && export GPT2SUITE_DATA_DIR="$PWD/$PACK/data"
if [ ! -e results/backbones/default/config.json ] && [ -d "$PACK/backbone" ]; then
  mkdir -p results/backbones && cp -r "$PACK/backbone" results/backbones/default  # results/ was parked
fi
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')" \
  | tee "$OUT_DIR/env.txt"

if [ "${TINY:-0}" = 1 ]; then  # the same config and cells on a tiny random backbone, a few examples each
  "$PY" - "$CONFIG" "$WORK" <<'EOF'
import os, sys
import yaml
from gpt2core import GPT2Config, GPT2LMModel
from gpt2core.checkpoint import save_hf_folder
from gpt2core.tokenizer import load_tokenizer
from tasks.leaderboard.config import load_config
config, work = sys.argv[1], sys.argv[2]
tok = load_tokenizer("results/backbones/default")
model = GPT2LMModel(GPT2Config.from_preset("tiny", vocab_size=len(tok), n_positions=512))
save_hf_folder(model, tok, f"{work}/tiny")
small = {"max_train_examples": 16, "max_eval_examples": 6, "val_examples": 4, "max_steps": 2,
         "finetune": {"eval_steps": 1}}
tasks = load_config(config).tasks
derived = {"extends": os.path.relpath(os.path.abspath(config), work), "name": "gpu-tiny",
           "models": {"default": os.path.abspath(f"{work}/tiny")}, "budgets": {"threads": 1, "lm_batch_size": 8},
           "task_budgets": {t: dict(small, ppl_max_chars=2000) if t == "wikitext2" else small for t in tasks}}
yaml.safe_dump(derived, open(f"{work}/gpu_tiny.yaml", "w"))
EOF
  CONFIG="$WORK/gpu_tiny.yaml"
fi

end=$((t0 + DEADLINE_S))
lb() {  # one leaderboard invocation, interrupted at the deadline (SIGINT keeps every finished record)
  local left=$((end - $(date +%s)))
  [ "$left" -gt 5 ] || return 0
  timeout -s INT -k 30 "$left" "$PY" -m tasks.cli.main leaderboard --config "$CONFIG" --out "$OUT_DIR/lb" \
    --models-dir "$WORK/models" "$@"
}
method_args=()
for m in $FIRST; do method_args+=(--method "$m"); done
IFS='|' read -r -a groups <<< "$GROUPS_LIST"
pids=()
for i in "${!groups[@]}"; do
  (
    task_args=()
    for t in ${groups[$i]}; do task_args+=(--task "$t"); done
    for t in ${groups[$i]}; do lb --task "$t" "${method_args[@]}"; done
    lb "${task_args[@]}"
  ) > "$OUT_DIR/logs/group$i.log" 2>&1 &
  pids+=($!)
  echo "group $i (${groups[$i]}): log $OUT_DIR/logs/group$i.log"
done
for pid in "${pids[@]}"; do wait "$pid"; done
echo "runs: $(( $(date +%s) - t0 )) s"
"$PY" -m tasks.cli.main leaderboard --config "$CONFIG" --out "$OUT_DIR/lb" --render-only > "$OUT_DIR/logs/render.log" 2>&1
tail -n 3 "$OUT_DIR/logs/render.log"
"$PY" -m tasks.cli.main leaderboard --config "$CONFIG" --out "$OUT_DIR/lb" --dry-run 2>&1 | head -1
echo "gpu_leaderboard: $(( $(date +%s) - t0 )) s"
