"""The evaluation table of results/atari.md section 3, from the JSON that ``fastweights eval`` wrote:

    for r in RUN_DIR...; do
      fastweights eval $r --episodes 30 --json > $r/eval30.json
      fastweights eval $r --episodes 30 --sample --json > $r/eval30-sample.json
    done
    python results/atari/eval_table.py RUN_DIR [RUN_DIR ...]

One row per run: greedy and sampled play (mean +- std over the games, and how many distinct scores the
games gave), then uniformly random play under the run's environment settings (30 games, played here once
per game).
"""

import json
import statistics
import sys
from pathlib import Path

from random_play import random_returns  # results/atari/random_play.py, beside this script

from fastweights.rl import load_rl_config


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def cell(d: dict | None) -> str:
    if d is None:
        return "-"
    return (f"{d['return_mean']:.1f} +- {d['return_std']:.1f} ({len(set(d['returns']))} distinct of "
            f"{d['episodes']})")


def main(runs) -> None:
    randoms = {}
    print("| run | core | frames | greedy | sampled | random play |")
    print("|---|---|---:|---|---|---|")
    for run in map(Path, runs):
        cfg = load_rl_config(run)
        if cfg.game not in randoms:
            r = random_returns(cfg, 30)
            randoms[cfg.game] = f"{statistics.mean(r):.1f} +- {statistics.stdev(r):.1f}"
        greedy, sampled = load(run / "eval30.json"), load(run / "eval30-sample.json")
        frames = (greedy or sampled or {"frames": 0})["frames"]
        print(f"| {run.name} | {cfg.core} | {frames:,} | {cell(greedy)} | {cell(sampled)} | {randoms[cfg.game]} |")


if __name__ == "__main__":
    main(sys.argv[1:])
