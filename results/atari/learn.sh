#!/usr/bin/env bash
# The Atari learning runs of results/atari.md, section 3: the LSTM and RDN cores on each GAME with the
# paper's hyperparameters (DESIGN.md) except the batch and unroll, and the cheaper shallow encoder, FRAMES
# emulator frames each (the learning rate decays linearly to 0 over them), one run at a time on the whole
# machine (2 actor processes, the learner on every core).
#
# BATCH x UNROLL defaults to 16 x 20 instead of the paper's 32 x 50: at 32 x 50 an update takes 6,400
# frames, so 5M frames give only 782 updates, and a Breakout run with them showed no learning by 2.5M
# frames (entropy still at its maximum; results/atari.md section 3). 16 x 20 gives 2,340 updates in the
# default 3M frames (about 25 minutes a run with the machine shared).
# RMSprop's epsilon defaults to 1e-5 (A2C's) instead of the paper's 0.01: the loss is summed over the batch
# and most weights' gradient RMS stays below 0.01, so epsilon, not the gradient scale, sets their step
# (results/atari/rms_vs_eps.py; results/atari.md section 3). BATCH=32 UNROLL=50 EPS=0.01 runs the paper's
# setting. INIT defaults to orthogonal (A2C/PPO's: policy head gain 0.01) instead of PyTorch's default:
# with the latter and eps 1e-5 the encoder's features grew to a mean of 35 with 84% of its units dead by
# 1M frames, and the policy stayed uniform. INIT=torch runs PyTorch's default.
#
#   results/atari/learn.sh RUNS_DIR [GAME...]        (default: Breakout Pong)
#
# Runs already finished are skipped and interrupted ones resumed, so it can be re-run until everything is
# done. The figures are then drawn by
#   python results/atari/plot.py return results/atari/GAME.png RUNS_DIR/GAME-*
set -euo pipefail
RUNS=${1:?usage: learn.sh RUNS_DIR [GAME...]}; shift
GAMES=${*:-Breakout Pong}
FW=${FW:-fastweights}
FRAMES=${FRAMES:-3e6}
CORES=${CORES:-"lstm rdn"}
ENCODER=${ENCODER:-shallow}
BATCH=${BATCH:-16}
UNROLL=${UNROLL:-20}
EPS=${EPS:-3e-3}
INIT=${INIT:-orthogonal}
for game in $GAMES; do
  for core in $CORES; do
    out="$RUNS/$game-$core-$ENCODER-b${BATCH}u${UNROLL}-eps${EPS}-${INIT}"
    if [ -f "$out/summary.json" ] && grep -q '"status": "completed"' "$out/summary.json"; then continue; fi
    if [ -f "$out/config.json" ]; then
      $FW train atari --out "$out" --resume
    else
      $FW train atari --game "$game" --core "$core" --encoder "$ENCODER" --frames "$FRAMES" --actors 2 \
          --batch-size "$BATCH" --unroll "$UNROLL" --rms-eps "$EPS" --init "$INIT" --log-interval 20 --save-interval 100 --out "$out"
    fi
  done
done
