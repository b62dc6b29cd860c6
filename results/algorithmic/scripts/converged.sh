#!/usr/bin/env bash
# The converged study of issue 18 (plan and costs: results/algorithmic/converged_plan.md): the paper's recipe
# (Adam 3e-4, betas 0.9/0.995, batch 64, dropout 0.1; no positional encoding for the FWPs and the LSTM, the
# models' default), best checkpoint by validation, every run until validation has not improved over the last
# 25% of its steps (--stop-plateau 0.25, checked at each validation) or to 20,000 steps.
#
#   results/algorithmic/scripts/converged.sh RUNS_DIR [SETTING...]     SETTING: d15 v5 (default: both)
#
#   d15: sequential ListOps at the paper's depth 15. The authors make it with their generator's
#        --only_depth 16 ("data for depth 15", IDSIA/recurrent-fwp algorithmic/README.md), which counts the
#        leaves as a level: bracket nesting 15. Written here as that same argument:
#        --depth 16 --depth-convention reference (the data of --depth 15). Models: lstm transformer lt deltanet
#        delta-rnn rdn (delta-lstm: MODELS=..., not in the budgeted plan).
#   v5:  code execution with 5 variables, 100 statements. Models: lstm lt deltanet delta-rnn rdn.
#
# Environment: SEED (default 0; the second-seed phase: SEED=1 MODELS="..." with the models the plan names),
# MODELS (overrides the setting's list), LAYERS/DMODEL/HEADS (the size; default 2 x 64 x 4, see below),
# THREADS (torch threads per run, default 1), STEPS (20000), PLATEAU (0.25), EVAL (validation interval, 200),
# CLIP (max gradient norm, default 1.0 as in the budget study; the authors' code does not clip: CLIP=off),
# FW (the fastweights command).
#
# Resumable: finished runs (summary.json "completed") are skipped, interrupted ones continued with --resume
# (the step, the best validation, hence the plateau rule, and the training-time clock carry over). Run two
# copies side by side, one thread each, to use both cores: each run is claimed with flock on RUN_DIR.lock, so
# the copies share one queue and never train the same run; a killed copy's claim goes with its process.
set -euo pipefail
RUNS=${1:?usage: converged.sh RUNS_DIR [SETTING...]}; shift
SETTINGS=${*:-d15 v5}
FW=${FW:-fastweights}
SEED=${SEED:-0}
THREADS=${THREADS:-1}
STEPS=${STEPS:-10000}  # the cap that fits 15 machine-hours in the worst case (converged_plan.md)
PLATEAU=${PLATEAU:-0.25}
EVAL=${EVAL:-200}
CLIP=${CLIP:-1.0}
LAYERS=${LAYERS:-2}   # 2 x 64 x 4 with 10,000 steps and no Delta LSTM: 14.9 machine-hours in the worst case
DMODEL=${DMODEL:-64}  # (converged_plan.md, re-measured on a quiet machine after the speed work)
HEADS=${HEADS:-4}
mkdir -p "$RUNS/data"
for setting in $SETTINGS; do
  case $setting in
    d15) task=listops; gen=(--depth 16 --depth-convention reference)
         models=${MODELS:-"lstm transformer lt deltanet delta-rnn rdn"} ;;
    v5) task=code-exec; gen=(--vars 5 --length 100); models=${MODELS:-"lstm lt deltanet delta-rnn rdn"} ;;
    *) echo "unknown setting $setting (d15 or v5)" >&2; exit 2 ;;
  esac
  data="$RUNS/data/$setting"
  # data: seed 0, 10k/1k/1k, made once (a second copy waits for the first's lock)
  (flock 9; [ -f "$data/meta.json" ] || $FW data $task "${gen[@]}" --out "$data") 9>"$RUNS/data/$setting.lock"
  for model in $models; do
    out="$RUNS/$setting-$model-s$SEED"
    exec 8>"$out.lock"
    if ! flock -n 8; then exec 8>&-; continue; fi  # another copy is training it
    if [ -f "$out/summary.json" ] && grep -q '"status": "completed"' "$out/summary.json"; then exec 8>&-; continue; fi
    resume=(); [ -f "$out/config.json" ] && resume=(--resume)
    $FW train $task --model "$model" --data "$data" --seed "$SEED" --layers "$LAYERS" --d-model "$DMODEL" \
        --heads "$HEADS" --steps "$STEPS" --stop-plateau "$PLATEAU" --eval-interval "$EVAL" --grad-clip "$CLIP" \
        --threads "$THREADS" --budget-clock cpu --out "$out" "${resume[@]}"
    exec 8>&-
  done
done
