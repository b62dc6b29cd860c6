"""Validation accuracy of every run of a setting at equal training steps (100, 200, ...): what each model
learned per batch, apart from what a step costs on this CPU (the right panel of the figures).

    python results/algorithmic/scripts/at_step.py RUNS_DIR SETTING [--steps 100,200,300]
"""

import argparse
import json
from pathlib import Path

MODELS = ["lstm", "transformer", "lt", "deltanet", "delta-mlp", "delta-delta", "delta-rnn", "delta-lstm", "rdn"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("setting")
    ap.add_argument("--steps", default="100,200,300")
    args = ap.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    metric = "print_acc" if args.setting.startswith("v") else "acc"
    print(f"| model | {' | '.join(f'valid at step {s}' for s in steps)} |")
    print(f"|---|{'---:|' * len(steps)}")
    for m in MODELS:
        path = Path(args.runs) / f"{args.setting}-{m}" / "metrics.jsonl"
        if not path.exists():
            continue
        valid = {}
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r.get("split") == "valid":
                valid[r["step"]] = r[metric]
        cells = [f"{100 * valid[s]:.1f}%" if s in valid else "–" for s in steps]
        print(f"| {m} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
