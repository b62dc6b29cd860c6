#!/usr/bin/env bash
# Learning per step, fp32 against auto (bf16 where this machine's bf16 matmul is faster), for issue 15's floor:
# ListOps depth 10, default size, 500 steps, validation every 50 steps, 2 seeds, one thread per run.
#
#   results/speed/scripts/learning.sh RUNS_DIR [MODEL...]      (default: lstm transformer deltanet delta-rnn rdn)
#
# Finished runs are skipped and interrupted ones resumed. Then, per model:
#   fastweights compare RUNS_DIR/d10-MODEL-* --plot results/speed/figures/fp32_vs_auto_d10_MODEL.png
set -euo pipefail
RUNS=${1:?usage: learning.sh RUNS_DIR [MODEL...]}; shift
MODELS=${*:-lstm transformer deltanet delta-rnn rdn}
FW=${FW:-fastweights}
mkdir -p "$RUNS"
for model in $MODELS; do
  for s in 0 1; do
    for p in fp32 auto; do
      out="$RUNS/d10-$model-$p-s$s"
      if [ -f "$out/summary.json" ] && grep -q '"status": "completed"' "$out/summary.json"; then continue; fi
      resume=(); [ -f "$out/config.json" ] && resume=(--resume)
      $FW train listops --model "$model" --depth 10 --steps 500 --eval-interval 50 --seed "$s" --precision "$p" \
          --threads 1 --out "$out" "${resume[@]}"
    done
  done
done
