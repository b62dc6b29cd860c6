#!/usr/bin/env bash
# Issue 15's speed measurements in one go, on a machine with nothing else running (they are ratios measured
# side by side, but a load that changes between the interleaved rounds still lands on one side):
#
#   results/speed/scripts/measure.sh OUT_DIR BASELINE_TREE      (e.g. a git worktree of f5cf0a7)
#
# Writes OUT_DIR/{bench_train_code3,bench_train_listops,bench_ops_delta_rule_1..3,profile_before,profile_after}.json
# and the printed tables in OUT_DIR/log.txt.
set -euo pipefail
OUT=${1:?usage: measure.sh OUT_DIR BASELINE_TREE}; BASE=${2:?usage: measure.sh OUT_DIR BASELINE_TREE}
FW=${FW:-fastweights}; PY=${PY:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
export OMP_WAIT_POLICY=PASSIVE
{
  lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-200
  $FW bench train --task code-exec --models lstm,transformer,deltanet,delta-rnn,rdn --precision fp32,bf16 \
      --threads 2 --steps 4 --warmup 1 --rounds 3 --baseline "$BASE" --json "$OUT/bench_train_code3.json"
  $FW bench train --task listops --models lstm,transformer,deltanet,delta-rnn,rdn --precision fp32,bf16 \
      --threads 2 --steps 6 --warmup 2 --rounds 2 --baseline "$BASE" --json "$OUT/bench_train_listops.json"
  for i in 1 2 3; do
    $FW bench ops --ops delta_rule --shapes "16x8x256x16;8x8x512x32;4x4x1024x64" --repeats 15 --threads 2 \
        --no-reference --no-memory --json "$OUT/bench_ops_delta_rule_$i.json"
  done
  $PY "$HERE/profile_step.py" --tree "$BASE" --json "$OUT/profile_before.json"
  $PY "$HERE/profile_step.py" --json "$OUT/profile_after.json"
} 2>&1 | tee "$OUT/log.txt"
