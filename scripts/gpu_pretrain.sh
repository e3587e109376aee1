#!/usr/bin/env bash
# Pretrain on a rented GPU (H200) from packed token shards, for a time budget, with torch.compile + bf16 + fused
# AdamW (configs/pretrain/gpu.yaml). Needs only python3 with torch, transformers, tokenizers, safetensors, numpy,
# pyyaml, tqdm (and matplotlib for the plot): the repo is copied there without its venv.
#
#   1. here:  gpt2suite pretrain --config configs/pretrain/gpu.yaml --prepare-only --export-shards .dev/shards/v2
#   2. copy the repo (with .dev/shards, without .venv) to the GPU machine, then there:
#      SHARDS=.dev/shards/v2 OUT_DIR=/path/to/out MINUTES=20 scripts/gpu_pretrain.sh
#
# Variables: SHARDS (packed shards folder, required), OUT_DIR (default $OUT), CONFIG (default
# configs/pretrain/gpu.yaml), MINUTES (training budget, default 20), INIT (a checkpoint folder to continue from, or
# a model folder to start from), EXTRA (more pretrain arguments, e.g. "--max-steps 200 --set micro_batch_size=32").
# Running it again with the same OUT_DIR resumes from the latest checkpoint there.
# Writes into OUT_DIR: run/ (checkpoints, metrics.jsonl, loss.png), model/ (final save_pretrained, 16MB shards,
# + tokenizer), metrics.jsonl, summary.json, loss.png, train.log.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARDS=${SHARDS:?set SHARDS to the packed shards folder (pretrain --prepare-only --export-shards DIR)}
OUT_DIR=${OUT_DIR:-${OUT:?set OUT_DIR}}
CONFIG=${CONFIG:-configs/pretrain/gpu.yaml}
MINUTES=${MINUTES:-20}
PY=${PYTHON:-python3}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$OUT_DIR"

"$PY" - <<'PYEOF' 2>&1 | tee "$OUT_DIR/env.txt"
import platform, torch, transformers, tokenizers
print(f"python {platform.python_version()} torch {torch.__version__} transformers {transformers.__version__} "
      f"tokenizers {tokenizers.__version__}")
print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
PYEOF

args=(--config "$CONFIG" --shards "$SHARDS" --out "$OUT_DIR/run" --max-time-minutes "$MINUTES" --no-progress)
heldout=$(ls "$SHARDS"/heldout/*validation* 2>/dev/null | head -1 || true)
if [ -n "$heldout" ]; then args+=(--set "ppl_eval=[$heldout]"); else args+=(--set "ppl_eval=[]"); fi
if ls -d "$OUT_DIR"/run/checkpoints/step_* >/dev/null 2>&1; then
  args+=(--resume)
elif [ -n "${INIT:-}" ]; then
  args+=(--init-from "$INIT")
fi
# shellcheck disable=SC2086
set +e
"$PY" -m gpt2core.pretrain.cli pretrain "${args[@]}" ${EXTRA:-} 2>&1 | tee "$OUT_DIR/train.log"
rc=${PIPESTATUS[0]}
set -e
for f in metrics.jsonl summary.json loss.png; do
  [ -f "$OUT_DIR/run/$f" ] && cp "$OUT_DIR/run/$f" "$OUT_DIR/$f"
done
if [ -d "$OUT_DIR/run/model" ]; then rm -rf "$OUT_DIR/model"; cp -r "$OUT_DIR/run/model" "$OUT_DIR/model"; fi
echo "gpu_pretrain: exit $rc; outputs in $OUT_DIR"
exit "$rc"
