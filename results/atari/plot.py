"""Draws the comparison figures of results/atari.md from the run directories' metrics.jsonl.

    python results/atari/plot.py memory results/atari/memory.png results/atari/memory/{rdn,lstm,ff}
    python results/atari/plot.py return results/atari/boxing.png results/atari/runs/Boxing-*
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(kind, png, *runs):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    key = "success" if kind == "memory" else "return_mean"
    for run in runs:
        cfg = json.loads((Path(run) / "config.json").read_text())
        recs = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines() if x.strip()]
        pts = [(r["frames"], r[key]) for r in recs if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), "o-" if kind != "memory" else "-", markersize=3,
                    label=f"{cfg['core']} core ({cfg['encoder']} encoder)")
    ax.set_xlabel("environment frames" + (" (emulator frames)" if kind != "memory" else ""))
    ax.set_ylabel("success rate (training episodes)" if kind == "memory" else "mean episode return (raw score)")
    ax.grid(alpha=0.3)
    ax.legend()
    title = json.loads((Path(runs[0]) / "config.json").read_text())
    ax.set_title(f"IMPALA on {'cue recall, delay ' + str(title['delay']) if kind == 'memory' else title['game']}")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    print(f"wrote {png}")


if __name__ == "__main__":
    main(*sys.argv[1:])
