"""Draws the comparison figures of results/atari.md from the run directories' metrics.jsonl.

    python results/atari/scripts/plot.py memory results/atari/figures/memory.png \
        results/atari/records/memory/{rdn,lstm,ff}
    python results/atari/scripts/plot.py return results/atari/figures/breakout.png results/atari/records/runs/Breakout-*

KIND PNG RUN_DIR...: the figure is written to PNG (its directory is created).

``return`` draws two panels against emulator frames: the mean return of the training episodes (points,
with a running mean over 5 records as a line) and the policy entropy (its maximum, ln |A|, dashed), which
shows whether the policy has moved from uniform at all. Runs are labelled by their directory name.
"""

import argparse
import json
import math
from pathlib import Path

import matplotlib

from fastweights.rl import load_rl_config
from fastweights.rl.actors import env_spec
from fastweights.train.runlog import read_metrics

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def max_entropy(run) -> float:
    """ln |A|: the entropy of the uniform policy over the run's game's actions."""
    return math.log(env_spec(load_rl_config(run))[1])


def running_mean(ys, k=5):
    windows = (ys[max(0, i - k + 1):i + 1] for i in range(len(ys)))
    return [sum(w) / len(w) for w in windows]


def memory(runs):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for run in runs:
        cfg = json.loads((Path(run) / "config.json").read_text())
        pts = [(r["frames"], r["success"]) for r in read_metrics(run) if r.get("success") is not None]
        if pts:
            ax.plot(*zip(*pts), "-", label=f"{cfg['core']} core ({cfg['encoder']} encoder)")
    ax.set_xlabel("environment frames")
    ax.set_ylabel("success rate (training episodes)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"IMPALA on cue recall, delay {cfg['delay']}")
    return fig


def returns(runs):
    fig, (ax, ax_h) = plt.subplots(1, 2, figsize=(12, 4.2))
    for run in runs:
        recs = read_metrics(run)
        pts = [(r["frames"], r["return_mean"]) for r in recs if r.get("return_mean") is not None]
        if not pts:
            continue
        xs, ys = zip(*pts)
        line = ax.plot(xs, ys, "o", markersize=2, alpha=0.35)[0]
        ax.plot(xs, running_mean(list(ys)), "-", color=line.get_color(), label=Path(run).name)
        ent = [(r["frames"], r["entropy"]) for r in recs if r.get("entropy") is not None]
        if ent:
            ax_h.plot(*zip(*ent), "-", color=line.get_color(), label=Path(run).name, linewidth=1)
    ax_h.axhline(max_entropy(runs[0]), color="k", linestyle="--", linewidth=0.8, label="uniform policy")
    ax.set_title(f"IMPALA on {load_rl_config(runs[0]).game}: mean return of training episodes")
    ax.set_xlabel("emulator frames")
    ax.set_ylabel("raw score (line: running mean of 5 records)")
    ax_h.set_title("policy entropy")
    ax_h.set_xlabel("emulator frames")
    ax_h.set_ylabel("nats")
    for a in (ax, ax_h):
        a.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax_h.legend(fontsize=7)
    return fig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=("memory", "return"))
    p.add_argument("png", help="the figure to write")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    args = p.parse_args()
    fig = (memory if args.kind == "memory" else returns)(args.runs)
    fig.tight_layout()
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=100)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
