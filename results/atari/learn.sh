#!/usr/bin/env bash
# The Atari learning runs of results/atari.md, section 3: the LSTM and RDN cores on each GAME with the
# paper's hyperparameters (DESIGN.md) and the cheaper shallow encoder, FRAMES emulator frames each
# (the learning rate decays linearly to 0 over them), one run at a time on the whole machine
# (2 actor processes x 16 environments, the learner on every core).
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
FRAMES=${FRAMES:-5e6}
CORES=${CORES:-"lstm rdn"}
ENCODER=${ENCODER:-shallow}
for game in $GAMES; do
  for core in $CORES; do
    out="$RUNS/$game-$core-$ENCODER"
    if [ -f "$out/summary.json" ] && grep -q '"status": "completed"' "$out/summary.json"; then continue; fi
    if [ -f "$out/config.json" ]; then
      $FW train atari --out "$out" --resume
    else
      $FW train atari --game "$game" --core "$core" --encoder "$ENCODER" --frames "$FRAMES" --actors 2 \
          --log-interval 5 --save-interval 20 --out "$out"
    fi
  done
done
