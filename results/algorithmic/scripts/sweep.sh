#!/usr/bin/env bash
# The equal-budget sweep behind results/algorithmic.md: every registered model on code execution (3 and 5
# variables) and sequential ListOps (depth 10 and 15), each run stopped after BUDGET minutes of the training
# process's CPU time (--budget-clock cpu: all threads summed, so runs that share the machine stay fair), on
# THREADS torch threads, with the paper's recipe (Adam 3e-4, betas 0.9/0.995, batch 64, dropout 0.1) at the
# default size (d_model 128, 2 layers, 4 heads).
#
#   results/algorithmic/scripts/sweep.sh RUNS_DIR [SETTING...]     SETTING: v3 v5 d10 d15 (default: all four)
#
# Runs already finished are skipped and interrupted ones resumed (--resume keeps the budget), so it can be
# re-run until everything is done. Two copies with disjoint settings can run side by side.
set -euo pipefail
RUNS=${1:?usage: sweep.sh RUNS_DIR [SETTING...]}; shift
SETTINGS=${*:-v3 d10 v5 d15}
FW=${FW:-fastweights}
BUDGET=${BUDGET:-10}
THREADS=${THREADS:-1}
MODELS=${MODELS:-"lstm transformer lt deltanet delta-mlp delta-delta delta-rnn delta-lstm rdn"}
mkdir -p "$RUNS/data"
for setting in $SETTINGS; do
  case $setting in
    v3|v5) task=code-exec; gen=(--vars "${setting#v}") ;;
    d10|d15) task=listops; gen=(--depth "${setting#d}") ;;
    *) echo "unknown setting $setting" >&2; exit 2 ;;
  esac
  data="$RUNS/data/$setting"
  [ -f "$data/meta.json" ] || $FW data $task "${gen[@]}" --out "$data"
  for model in $MODELS; do
    out="$RUNS/$setting-$model"
    if [ -f "$out/summary.json" ] && grep -q '"status": "completed"' "$out/summary.json"; then continue; fi
    resume=(); [ -f "$out/config.json" ] && resume=(--resume)
    $FW train $task --model "$model" --data "$data" --time-budget "$BUDGET" --budget-clock cpu \
        --threads "$THREADS" --steps 100000 --eval-interval 100 --out "$out" "${resume[@]}"
  done
done
