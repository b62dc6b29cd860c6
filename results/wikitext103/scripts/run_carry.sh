#!/usr/bin/env bash
# The second context mode: the Delta RNN trained with --carry-state (the state carried across
# consecutive segments, detached), same preset, data and 5-CPU-minute budget as run_all.sh; scored with the
# state carried through the whole split (segments of 128).
#
#   bash results/wikitext103/scripts/run_carry.sh          # from the repository root; writes runs/lm/tiny-carry-MODEL
#
# Environment: DATA (the WikiText-103 directory; default $FASTWEIGHTS_DATA/wikitext-103, FASTWEIGHTS_DATA
# defaulting to ../shared/data beside the repository), OUT (default runs/lm), FW (default the repository's
# .venv/bin/fastweights, else fastweights on PATH).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
DATA=${DATA:-${FASTWEIGHTS_DATA:-$ROOT/../shared/data}/wikitext-103}
OUT=${OUT:-runs/lm}
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
if [ -x "$ROOT/.venv/bin/fastweights" ]; then FW=${FW:-$ROOT/.venv/bin/fastweights}; else FW=${FW:-fastweights}; fi
one() {
  model=$1 steps=$2 run="$OUT/tiny-carry-$1"
  if [ -f "$run/config.json" ]; then   # continue a stopped run (bitwise, carried state included)
    grep -q '"status": "completed"' "$run/summary.json" 2>/dev/null ||
      $FW train lm --out "$run" --resume >> "$run.log" 2>&1 || { echo "FAILED $model"; return 1; }
  else
    $FW train lm --model "$model" --preset tiny --data "$DATA" --train-file "$DATA/wiki.train.prefix.tokens" \
      --cache-dir "$OUT/cache" --steps "$steps" --time-budget 5 --budget-clock cpu --threads 1 --carry-state \
      --eval-interval 150 --log-interval 25 --out "$run" > "$run.log" 2>&1 || { echo "FAILED $model"; return 1; }
  fi
  for split in valid test; do
    $FW eval "$run" --split "$split" --mode carry --window 128 --threads 1 --json > "$run.eval-$split-carry.json"
  done
  # the split cut into 16 parts of ~13.6k words, each carrying its state from a fresh start
  $FW eval "$run" --split valid --mode carry --window 128 --batch-size 16 --threads 1 --json \
    > "$run.eval-valid-carry16.json"
  echo "done $model"
}
export -f one
export DATA OUT FW
one delta-rnn 800   # add e.g. "one deltanet 878" for more models
