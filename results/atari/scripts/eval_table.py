"""The evaluation table of results/atari.md section 3, from the JSON that ``fastweights eval`` wrote:

    for r in RUN_DIR...; do
      fastweights eval $r --episodes 30 --json > $r/eval30.json
      fastweights eval $r --episodes 30 --sample --json > $r/eval30-sample.json
    done
    python results/atari/scripts/eval_table.py RUN_DIR [RUN_DIR ...] [--random-episodes 30]

One row per run: greedy and sampled play (mean +- std over the games, and how many distinct scores the
games gave), then uniformly random play under the run's environment settings (``--random-episodes`` games,
default 30, played here once per game; 0 leaves the column out, so no emulator runs).
"""

import argparse
import json
import statistics
from pathlib import Path

from random_play import random_returns  # random_play.py, beside this script

from fastweights.rl import load_rl_config


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def cell(d: dict | None) -> str:
    if d is None:
        return "-"
    return (f"{d['return_mean']:.1f} +- {d['return_std']:.1f} ({len(set(d['returns']))} distinct of "
            f"{d['episodes']})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--random-episodes", type=int, default=30,
                   help="games of random play per game (default 30; 0: no random-play column)")
    args = p.parse_args()
    randoms = {}
    random_col = args.random_episodes > 0
    print("| run | core | frames | greedy | sampled |" + (" random play |" if random_col else ""))
    print("|---|---|---:|---|---|" + ("---|" if random_col else ""))
    for run in map(Path, args.runs):
        cfg = load_rl_config(run)
        if random_col and cfg.game not in randoms:
            r = random_returns(cfg, args.random_episodes)
            randoms[cfg.game] = f"{statistics.mean(r):.1f} +- {statistics.stdev(r) if len(r) > 1 else 0.0:.1f}"
        greedy, sampled = load(run / "eval30.json"), load(run / "eval30-sample.json")
        frames = (greedy or sampled or {"frames": 0})["frames"]
        print(f"| {run.name} | {cfg.core} | {frames:,} | {cell(greedy)} | {cell(sampled)} |"
              + (f" {randoms[cfg.game]} |" if random_col else ""))


if __name__ == "__main__":
    main()
