#!/usr/bin/env bash
# Tables and plots of results/algorithmic.md from a sweep.sh runs directory:
#   results/algorithmic/report.sh RUNS_DIR [SETTING...]     SETTING: v3 v5 d10 d15 (default: all four)
#   PLOT_ONLY=1 results/algorithmic/report.sh RUNS_DIR ...   redraws the figures only
# For each setting, every finished run (summary.json present) is scored on the test split (best-validation
# checkpoint) and drawn; the runs' config, summary and metrics are copied to results/algorithmic/runs/.
set -euo pipefail
RUNS=${1:?usage: report.sh RUNS_DIR [SETTING...]}; shift
SETTINGS=${*:-v3 v5 d10 d15}
FW=${FW:-fastweights}
HERE=$(cd "$(dirname "$0")" && pwd)
MODELS=${MODELS:-"lstm transformer lt deltanet delta-mlp delta-delta delta-rnn delta-lstm rdn"}
declare -A TITLE=([v3]="code execution, 3 variables" [v5]="code execution, 5 variables"
                  [d10]="ListOps, depth 10" [d15]="ListOps, depth 15")
for setting in $SETTINGS; do
  dirs=()
  for model in $MODELS; do
    d="$RUNS/$setting-$model"
    [ -f "$d/summary.json" ] || continue
    dirs+=("$d")
    mkdir -p "$HERE/runs/$setting-$model"
    cp "$d/config.json" "$d/summary.json" "$d/metrics.jsonl" "$HERE/runs/$setting-$model/"
  done
  [ ${#dirs[@]} -gt 0 ] || continue
  if [ -n "${PLOT_ONLY:-}" ]; then  # redraw the figure only (no test-split scoring)
    $FW compare "${dirs[@]}" --title "${TITLE[$setting]}" --plot "$HERE/$setting.png" > /dev/null
    continue
  fi
  $FW compare "${dirs[@]}" --test --title "${TITLE[$setting]}" --plot "$HERE/$setting.png" \
      --markdown "$HERE/$setting.md" --json > "$HERE/$setting.json"
  echo "== ${TITLE[$setting]}"; cat "$HERE/$setting.md"
done
