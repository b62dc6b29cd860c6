#!/usr/bin/env bash
# Tables and plots of results/algorithmic.md from a sweep.sh runs directory:
#   results/algorithmic/scripts/report.sh [--out STUDY_DIR] RUNS_DIR [SETTING...]
#                                           SETTING: v3 v5 d10 d15 (default: all four)
#   PLOT_ONLY=1 results/algorithmic/scripts/report.sh ...   redraws the figures only
#   NO_TEST=1 results/algorithmic/scripts/report.sh ...     tables without test-split scoring (validation only),
#                                                           e.g. of the committed records, which keep no checkpoints
# For each setting, every finished run (summary.json present) is scored on the test split (best-validation
# checkpoint) and drawn. Writes, under STUDY_DIR (default: results/algorithmic, this script's study):
#   records/runs/SETTING-MODEL/   the runs' config, summary and metrics (copied)
#   records/SETTING.md, .json     the table (Markdown; JSON rows)
#   figures/SETTING.png           the curves
set -euo pipefail
STUDY=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = --out ]; then STUDY=${2:?usage: report.sh [--out STUDY_DIR] RUNS_DIR [SETTING...]}; shift 2; fi
RUNS=${1:?usage: report.sh [--out STUDY_DIR] RUNS_DIR [SETTING...]}; shift
SETTINGS=${*:-v3 v5 d10 d15}
FW=${FW:-fastweights}
MODELS=${MODELS:-"lstm transformer lt deltanet delta-mlp delta-delta delta-rnn delta-lstm rdn"}
declare -A TITLE=([v3]="code execution, 3 variables" [v5]="code execution, 5 variables"
                  [d10]="ListOps, depth 10" [d15]="ListOps, depth 15")
mkdir -p "$STUDY/records/runs" "$STUDY/figures"
test=(--test); [ -n "${NO_TEST:-}" ] && test=()
for setting in $SETTINGS; do
  dirs=()
  for model in $MODELS; do
    d="$RUNS/$setting-$model"
    [ -f "$d/summary.json" ] || continue
    dirs+=("$d")
    dst="$STUDY/records/runs/$setting-$model"
    mkdir -p "$dst"
    [ "$d" -ef "$dst" ] || cp "$d/config.json" "$d/summary.json" "$d/metrics.jsonl" "$dst/"
  done
  [ ${#dirs[@]} -gt 0 ] || continue
  if [ -n "${PLOT_ONLY:-}" ]; then  # redraw the figure only (no test-split scoring)
    $FW compare "${dirs[@]}" --title "${TITLE[$setting]}" --plot "$STUDY/figures/$setting.png" > /dev/null
    continue
  fi
  $FW compare "${dirs[@]}" "${test[@]}" --title "${TITLE[$setting]}" --plot "$STUDY/figures/$setting.png" \
      --markdown "$STUDY/records/$setting.md" --json > "$STUDY/records/$setting.json"
  echo "== ${TITLE[$setting]}"; cat "$STUDY/records/$setting.md"
done
