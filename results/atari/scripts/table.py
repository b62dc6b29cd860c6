"""The Markdown table of results/atari.md section 3, from the run directories' config and metrics.

    python results/atari/scripts/table.py RUN_DIR [RUN_DIR ...]

One row per run: its optimiser settings, whether a lost life ended a learning episode (with FIRE pressed
after it; runs before these options existed read as off), the frames and learner updates reached, wall-clock minutes of
training and emulator frames/s, the mean return of the training episodes over the first and the last
fifth of its records (episode-weighted), and the policy entropy at the end against its maximum ln |A|.
"""

import sys
from pathlib import Path

from plot import max_entropy  # plot.py, beside this script

from fastweights.rl import load_rl_config
from fastweights.train.runlog import read_metrics


def fifth_mean(recs, last: bool) -> str:
    with_returns = [r for r in recs if r.get("return_mean") is not None]
    n = max(1, len(with_returns) // 5)
    part = with_returns[-n:] if last else with_returns[:n]
    episodes = sum(r["episodes"] for r in part)
    return f"{sum(r['return_mean'] * r['episodes'] for r in part) / episodes:.2f}" if episodes else "-"


def main(runs) -> None:
    print("| run | core | batch x unroll | RMSprop eps | init | life | frames | updates | wall min | frames/s "
          "| return, first fifth | return, last fifth | entropy at end (max) |")
    print("|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|")
    for run in map(Path, runs):
        cfg = load_rl_config(run)
        recs = read_metrics(run)
        last = recs[-1]
        minutes = last["train_seconds"] / 60
        entropy = next(r["entropy"] for r in reversed(recs) if r.get("entropy") is not None)
        life = "/".join(name for name, on in (("episodic", cfg.episodic_life), ("fire", cfg.fire_reset)) if on)
        print(f"| {run.name} | {cfg.core} | {cfg.batch_size} x {cfg.unroll} | {cfg.rms_eps:g} "
              f"| {cfg.init} | {life or 'off'} | {last['frames']:,} | {last['step']:,} | {minutes:.0f} "
              f"| {last['frames'] / last['train_seconds']:,.0f} | {fifth_mean(recs, False)} "
              f"| {fifth_mean(recs, True)} | {entropy:.3f} ({max_entropy(run):.3f}) |")


if __name__ == "__main__":
    main(sys.argv[1:])
