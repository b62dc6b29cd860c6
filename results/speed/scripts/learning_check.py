"""Issue 15's learning floor, read off the run records: do the validation curves with ``--precision auto`` lie
within the spread between seeds of the fp32 curves?

    python results/speed/scripts/learning_check.py RUNS_DIR [--models lstm,transformer,deltanet,delta-rnn,rdn]

RUNS_DIR holds ``d10-MODEL-PRECISION-sSEED`` run directories (``results/speed/scripts/learning.sh``). Per model,
over the validations both precisions have (every 50 steps), it prints:

* seed spread: the largest |fp32 seed 0 - fp32 seed 1| validation accuracy, and the mean of that gap;
* precision gap: the largest |auto - fp32| at the same seed and step (both seeds), and its mean;
* whether the mean precision gap is within the mean seed spread (the floor's reading: the two precisions differ
  by no more than two seeds of one precision do), and the best validation accuracy of each run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def curve(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("split") == "valid":
            out[r["step"]] = 100 * r["acc"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs")
    ap.add_argument("--models", default="lstm,transformer,deltanet,delta-rnn,rdn")
    args = ap.parse_args(argv)
    root = Path(args.runs)
    print("| model | seed spread, fp32: max / mean (points) | auto - fp32 at the same seed: max / mean | "
          "within the seed spread | best valid acc, fp32 s0 / s1, auto s0 / s1 |")
    print("|---|---:|---:|---|---|")
    missing = 0
    for model in [m for m in args.models.split(",") if m]:
        runs = {(p, s): root / f"d10-{model}-{p}-s{s}" for p in ("fp32", "auto") for s in (0, 1)}
        if not all((r / "metrics.jsonl").is_file() for r in runs.values()):
            print(f"| {model} | (runs missing) | | | |")
            missing += 1
            continue
        c = {k: curve(r) for k, r in runs.items()}
        steps = sorted(set.intersection(*(set(v) for v in c.values())))
        seed = [abs(c["fp32", 0][t] - c["fp32", 1][t]) for t in steps]
        prec = [abs(c["auto", s][t] - c["fp32", s][t]) for s in (0, 1) for t in steps]
        best = " / ".join(f"{max(c[k].values()):.1f}" for k in [("fp32", 0), ("fp32", 1), ("auto", 0), ("auto", 1)])
        ok = statistics.mean(prec) <= statistics.mean(seed)
        print(f"| {model} | {max(seed):.1f} / {statistics.mean(seed):.1f} | {max(prec):.1f} / "
              f"{statistics.mean(prec):.1f} | {'yes' if ok else 'no'} | {best} |")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
