"""Print accuracy of simple non-learned predictors on a code-execution split: what a model scores if it
has learned only part of the program's semantics. Used in results/algorithmic.md to read the ~31% plateau.

    python results/algorithmic/scripts/baselines.py runs/alg/data/v3/test.txt

Each predictor is an interpreter with one part of the semantics left out:
  majority        the most frequent printed value of the split, always
  last-assign     the value of the variable's last unconditional assignment (ignores ++/--, all `if`s)
  no-increments   exact assignments and conditions, but ++/-- do nothing
  skip-ifs        exact assignments and ++/--, but no conditional body runs
  run-all-ifs     exact assignments and ++/--, and every conditional body runs
  exact           the full semantics (100% by construction: checks the parser)
"""
from __future__ import annotations

import argparse
import collections

from fastweights.tasks.splits import read_split

MODES = ("last-assign", "no-increments", "skip-ifs", "run-all-ifs", "exact")


def run(src: list[str], mode: str) -> list[str | None]:
    """The predicted value at each print's ';' (None elsewhere), under ``mode``."""
    env: dict[str, int] = {}
    out: list[str | None] = [None] * len(src)
    i = 0
    while i < len(src):
        live = True
        if src[i] == "if":
            var, cmp, bound = src[i + 1], src[i + 2], int(src[i + 3])
            value = env.get(var, 0)
            holds = value < bound if cmp == "<" else value > bound
            live = {"last-assign": False, "skip-ifs": False, "run-all-ifs": True}.get(mode, holds)
            i += 5
        if src[i] == "print":
            out[i + 2] = str(env.get(src[i + 1], 0))
            i += 3
        elif src[i + 1] == "=":
            if live:
                env[src[i]] = int(src[i + 2])
            i += 4
        else:
            if live and mode not in ("last-assign", "no-increments") and src[i] in env:
                env[src[i]] += 1 if src[i + 1] == "++" else -1
            i += 3
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("split", help="a code-execution split file written by `fastweights data code-exec`")
    args = ap.parse_args()
    examples = read_split(args.split, "code-exec")
    counts = collections.Counter(t for _, tgt in examples for t in tgt if t != "_")
    majority = counts.most_common(1)[0][0]
    total = sum(counts.values())
    print(f"{args.split}: {len(examples)} programs, {total} executed prints\n")
    print("| predictor | print accuracy |\n|---|---:|")
    print(f"| majority (always {majority}) | {100 * counts[majority] / total:.1f}% |")
    for mode in MODES:
        hits = 0
        for src, tgt in examples:
            pred = run(list(src), mode)
            hits += sum(p == t for p, t in zip(pred, tgt) if t != "_")
        print(f"| {mode} | {100 * hits / total:.1f}% |")


if __name__ == "__main__":
    main()
