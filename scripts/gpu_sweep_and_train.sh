#!/usr/bin/env bash
# The run that made today's default backbone from the v1 (English) corpus; backbone v2 uses scripts/gpu_backbone_v2.sh.
# One H200 session that picks and trains the default backbone:
#   1. a sweep at equal compute (FLOPS each, nanoGPT's 6N + 12LHQT per token) of three sizes with the 8,192-token
#      BPE and the middle size with a 16,384-token BPE; the four runs share the GPU concurrently (small models
#      leave most of it idle), so equal compute holds whatever share each gets;
#   2. the winner by WikiText-2 validation bits per byte (tokenizer-independent) trained on from its sweep
#      weights for FINAL_MINUTES with torch.compile + bf16 + fused AdamW;
#   3. outputs packed for transfer: the final model folder as a tar split into 15 MB parts, logs as one tar.
#
# Prepared here (no GPU):
#   gpt2suite pretrain --config configs/pretrain/sweep/m_v8k.yaml --prepare-only --export-shards .dev/shards/default
#   python .dev/make_subset.py ... .dev/shards/v16k_sub 20000000     (first 20M tokens of the 16k corpus)
# Run there:  SHARDS8=.dev/shards/default SHARDS16=.dev/shards/v16k_sub OUT_DIR=$OUT scripts/gpu_sweep_and_train.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT_DIR:-${OUT:?set OUT_DIR}}
SHARDS8=${SHARDS8:-.dev/shards/default}
SHARDS16=${SHARDS16:-.dev/shards/v16k_sub}
FLOPS=${FLOPS:-5e14}
FINAL_MINUTES=${FINAL_MINUTES:-4}
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/gpu_work}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$OUT_DIR" "$WORK"
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')"
DEVICE=$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")

SWEEP_SET=(--set seq_len=512 --set micro_batch_size=${SWEEP_MICRO:-32} --set grad_accum=1 --set warmup_steps=50
           --set eval_interval=100000 --set checkpoint_interval=100000 --set keep_last_k=1 --set eval_iters=40
           --set ppl_eval_max_chars=400000 --set plot_path=null --set compile=false --set lr=1.5e-3 --set min_lr=1.5e-4)
start_run() {  # name config shards
  local name=$1 cfg=$2 shards=$3 tokens
  tokens=$("$PY" scripts/sweep_budget.py "configs/pretrain/sweep/$cfg.yaml" "$FLOPS" --set seq_len=512)
  echo "sweep $name: $cfg, $tokens tokens (${FLOPS} FLOPs)"
  "$PY" -m gpt2core.pretrain.cli pretrain --config "configs/pretrain/sweep/$cfg.yaml" --shards "$shards" \
    --device "$DEVICE" --dtype "${DTYPE:-bf16}" --max-tokens "$tokens" --out "$WORK/sweep/$name" --no-progress \
    --max-time-minutes "${SWEEP_MAX_MINUTES:-2.2}" \
    "${SWEEP_SET[@]}" --set "ppl_eval=[$shards/heldout/wikitext2_validation.txt.gz]" ${SWEEP_EXTRA:-} \
    > "$WORK/sweep_$name.log" 2>&1 &
}
t0=$(date +%s)
start_run s_v8k s_v8k "$SHARDS8"
start_run m_v8k m_v8k "$SHARDS8"
start_run l_v8k l_v8k "$SHARDS8"
start_run m_v16k m_v16k "$SHARDS16"
wait
echo "sweep wall time: $(( $(date +%s) - t0 )) s"

# The winner, and its throughput during the (shared) sweep as a floor for the final run's token budget.
read -r WINNER WIN_CFG WIN_SHARDS WIN_TOKS < <("$PY" - "$WORK" "$SHARDS8" "$SHARDS16" <<'PYEOF'
import json, sys
from pathlib import Path
work, s8, s16 = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = []
for name in ("s_v8k", "m_v8k", "l_v8k", "m_v16k"):
    f = work / "sweep" / name / "summary.json"
    if not f.exists():
        print(f"# {name}: no summary (see sweep_{name}.log)", file=sys.stderr)
        continue
    s = json.loads(f.read_text())
    bpb = next(iter(s.get("ppl_eval", {}).values()), {}).get("bpb", float("inf"))
    metrics = [json.loads(l) for l in (work / "sweep" / name / "metrics.jsonl").read_text().splitlines() if l]
    toks = [m["tok_per_s"] for m in metrics if "tok_per_s" in m]
    rows.append((bpb, name, s, sum(toks) / max(1, len(toks))))
    print(f"# {name}: params={s['parameters']} tokens={s['tokens']} val_loss={s.get('val_loss'):.4f} "
          f"wikitext2_val_bpb={bpb:.4f} tok/s={rows[-1][3]:.0f} stop={s['stop_reason']}", file=sys.stderr)
bpb, name, s, toks = min(rows)
print(name, name, s16 if name.endswith("16k") else s8, int(toks))
PYEOF
)
echo "winner: $WINNER (sweep tok/s $WIN_TOKS)"

FINAL_TOKENS=$(awk "BEGIN {print int($WIN_TOKS * 60 * $FINAL_MINUTES * 2.5)}")  # alone + compiled beats shared; time caps it
"$PY" -m gpt2core.pretrain.cli pretrain --config "configs/pretrain/sweep/$WIN_CFG.yaml" --shards "$WIN_SHARDS" \
  --device "$DEVICE" --dtype "${DTYPE:-bf16}" --init-from "$WORK/sweep/$WINNER/model" --out "$WORK/final" --no-progress \
  --max-tokens "$FINAL_TOKENS" --max-time-minutes "$FINAL_MINUTES" \
  --set seq_len=512 --set micro_batch_size=${FINAL_MICRO:-128} --set grad_accum=1 --set warmup_steps=50 \
  --set lr=1.5e-3 --set min_lr=1.5e-4 --set compile=${FINAL_COMPILE:-true} --set eval_interval=200 \
  --set eval_iters=40 --set checkpoint_interval=100000 --set keep_last_k=1 --set log_interval=25 \
  --set plot_path=null --set "ppl_eval=[$WIN_SHARDS/heldout/wikitext2_validation.txt.gz]" ${FINAL_EXTRA:-} \
  > "$WORK/final.log" 2>&1
echo "final exit $? after $(( $(date +%s) - t0 )) s"
tail -5 "$WORK/final.log"

tar -C "$WORK/final" -cf "$WORK/model.tar" model
split -b 15M -d "$WORK/model.tar" "$OUT_DIR/model.tar.part"
tar -C "$WORK" -czf "$OUT_DIR/logs.tar.gz" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' \
  --exclude='*.xz' sweep final sweep_s_v8k.log sweep_m_v8k.log sweep_l_v8k.log sweep_m_v16k.log final.log
ls -la "$OUT_DIR"
