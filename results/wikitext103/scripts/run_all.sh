#!/usr/bin/env bash
# Trains every registered model with the tiny preset on the 2.75 MB training prefix for the same CPU budget
# (5 CPU-minutes of the training process, one thread), then scores valid and test (sliding window 128,
# stride 64) and samples a little text. Three runs at a time on a shared 2-core machine; the budget counts
# process CPU time, so sharing the machine does not change what each run gets.
#
#   bash results/wikitext103/scripts/run_all.sh            # from the repository root; writes runs/lm/tiny-MODEL
#
# Environment: DATA (the WikiText-103 directory; default $FASTWEIGHTS_DATA/wikitext-103, FASTWEIGHTS_DATA
# defaulting to ../shared/data beside the repository), OUT (default runs/lm), FW (default the repository's
# .venv/bin/fastweights, else fastweights on PATH), JOBS (runs at a time, default 3).
#
# --steps per model: about 0.92 x 300 CPU-s / (CPU-s per step from step_cost.py), so that each model's cosine
# schedule ends near the budget (the budget still stops a run that is slower than measured).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
DATA=${DATA:-${FASTWEIGHTS_DATA:-$ROOT/../shared/data}/wikitext-103}
OUT=${OUT:-runs/lm}
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1  # no spinning threads on the CPU clock
if [ -x "$ROOT/.venv/bin/fastweights" ]; then FW=${FW:-$ROOT/.venv/bin/fastweights}; else FW=${FW:-fastweights}; fi
one() {
  model=$1 steps=$2 run="$OUT/tiny-$1"
  if [ ! -f "$run/summary.json" ]; then
    $FW train lm --model "$model" --preset tiny --data "$DATA" --train-file "$DATA/wiki.train.prefix.tokens" \
      --cache-dir "$OUT/cache" --steps "$steps" --time-budget 5 --budget-clock cpu --threads 1 \
      --eval-interval 150 --log-interval 25 --out "$run" > "$run.log" 2>&1 || { echo "FAILED $model"; return 1; }
  fi
  for split in valid test; do
    $FW eval "$run" --split "$split" --window 128 --stride 64 --threads 1 --json > "$run.eval-$split.json"
  done
  $FW generate "$run" --prompt "The" --tokens 40 --top-k 40 --seed 0 --threads 1 > "$run.sample.txt" 2>/dev/null
  echo "done $model"
}
export -f one
export DATA OUT FW
printf '%s\n' "delta-mlp 323" "delta-lstm 485" "delta-delta 696" "delta-rnn 800" "lstm 846" "transformer 876" \
  "deltanet 878" "lt 896" "rdn 926" | xargs -P "${JOBS:-3}" -L 1 bash -c 'one $0 $1'
