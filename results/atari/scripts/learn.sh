#!/usr/bin/env bash
# The Atari learning runs of results/atari.md, section 3: the LSTM and RDN cores on each GAME with the
# cheaper shallow encoder, FRAMES emulator frames each (the learning rate decays linearly to 0 over them),
# one run at a time on the whole machine (2 actor processes, the learner on every core), with the
# paper's hyperparameters (DESIGN.md) except these, which are environment variables:
#
#   BATCH x UNROLL  16 x 20 (paper: 32 x 50, where 5M frames give only 782 updates)
#   EPS             RMSprop epsilon 3e-3 (paper: 0.01; A2C's 1e-5 on a mean loss, scaled to our loss summed
#                   over 320 steps). With 0.01 most weights' gradient RMS stays below epsilon, so epsilon
#                   sets their step (results/atari/scripts/rms_vs_eps.py); with 1e-5 the encoder collapsed.
#   INIT            orthogonal (A2C/PPO's, policy head gain 0.01; paper's code: torch, PyTorch's default)
#   LIFE            on: --episodic-life and --fire-reset (as the paper's torchbeast code; run names end
#                   in -life); off: full games as learning episodes, the agent presses FIRE itself
#   FRAMES          3e6
#   SEED            0 (another seed adds -sSEED to the run names)
#
# With LIFE=on both cores learn Breakout, Space Invaders and Road Runner within 3M frames; with LIFE=off
# none of the settings tried learned Breakout or Boxing (results/atari.md sections 3 and 4).
# BATCH=32 UNROLL=50 EPS=0.01 INIT=torch runs the paper's optimiser setting.
#
#   results/atari/scripts/learn.sh RUNS_DIR [GAME...]        (default: Breakout SpaceInvaders RoadRunner)
#
# Runs already finished are skipped and interrupted ones resumed, so it can be re-run until everything is
# done. The figures are then drawn by
#   python results/atari/scripts/plot.py return results/atari/figures/GAME.png RUNS_DIR/GAME-*
set -euo pipefail
RUNS=${1:?usage: learn.sh RUNS_DIR [GAME...]}; shift
GAMES=${*:-Breakout SpaceInvaders RoadRunner}
FW=${FW:-fastweights}
FRAMES=${FRAMES:-3e6}
CORES=${CORES:-"lstm rdn"}
ENCODER=${ENCODER:-shallow}
BATCH=${BATCH:-16}
UNROLL=${UNROLL:-20}
EPS=${EPS:-3e-3}
INIT=${INIT:-orthogonal}
LIFE=${LIFE:-on}
SEED=${SEED:-0}
for game in $GAMES; do
  for core in $CORES; do
    out="$RUNS/$game-$core-$ENCODER-b${BATCH}u${UNROLL}-eps${EPS}-${INIT}"
    out+="$([ "$LIFE" = on ] && echo -life)$([ "$SEED" = 0 ] || echo "-s$SEED")"
    if [ -f "$out/summary.json" ] && grep -q '"status": "completed"' "$out/summary.json"; then continue; fi
    if [ -f "$out/config.json" ]; then
      $FW train atari --out "$out" --resume
    else
      $FW train atari --game "$game" --core "$core" --encoder "$ENCODER" --frames "$FRAMES" --actors 2 \
          --batch-size "$BATCH" --unroll "$UNROLL" --rms-eps "$EPS" --init "$INIT" --episodic-life "$LIFE" \
          --fire-reset "$LIFE" --seed "$SEED" --log-interval 20 --save-interval 100 --out "$out"
    fi
  done
done
