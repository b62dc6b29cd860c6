"""Lock-step training-step timing of several source trees, for a machine shared with other work.

``fastweights bench train --baseline DIR`` alternates whole worker processes (minutes apart), so a change in the
machine's load between them lands on one tree's numbers only. Here one worker process per tree holds every case
(built by ``fastweights/bench/train.py``'s ``_build_case``, the bench's own real training step) and the driver
asks the workers for one step of the same case in turn, the trees' order alternating every round: the steps
compared are seconds apart. Per case and tree it reports the tokens/s over all timed steps, and per round the
ratio of each tree's step time to the first tree's (the median of those paired ratios is the robust number).

    python results/speed/code_exec_fp32.py --trees /work/base-f5cf0a7,. --models lstm,deltanet --steps 8 \\
        --json out.json

Each tree is put first on ``PYTHONPATH`` of its worker (as ``bench train --baseline`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "fastweights" / "bench" / "train.py"


def worker() -> None:
    import runpy

    import torch

    spec = json.loads(sys.stdin.readline())
    torch.set_num_threads(spec["threads"])
    bench = runpy.run_path(spec["bench"], run_name="bench")
    cases = {}
    for m in spec["models"]:
        step, params, _ = bench["_build_case"]("code-exec", m, "fp32", [spec["train_examples"], 16, 16],
                                               spec["batch_size"], 0, {})
        cases[m] = (step, params)
    print(json.dumps({"ready": {m: p for m, (_, p) in cases.items()}}), flush=True)
    for line in sys.stdin:
        m = json.loads(line)["step"]
        t0, c0 = time.perf_counter(), time.process_time()
        n = cases[m][0]()
        print(json.dumps({"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "tokens": n}),
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", required=True, help="comma-separated source trees; ratios are against the first")
    ap.add_argument("--models", default="lstm,transformer,deltanet,delta-rnn,rdn")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--train-examples", type=int, default=2000)
    ap.add_argument("--json")
    a = ap.parse_args()
    trees = [str(Path(t).resolve()) for t in a.trees.split(",")]
    models = a.models.split(",")
    spec = {"threads": a.threads, "bench": str(BENCH), "models": models, "batch_size": a.batch_size,
            "train_examples": a.train_examples}
    procs = []
    for tree in trees:
        env = {**os.environ, "PYTHONPATH": tree + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        p = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env, cwd=tree)
        p.stdin.write(json.dumps(spec) + "\n")
        p.stdin.flush()
        procs.append(p)
    params = [json.loads(p.stdout.readline())["ready"] for p in procs]

    def step(i: int, m: str) -> dict:
        procs[i].stdin.write(json.dumps({"step": m}) + "\n")
        procs[i].stdin.flush()
        return json.loads(procs[i].stdout.readline())

    res = {(i, m): [] for i in range(len(trees)) for m in models}
    for r in range(a.warmup + a.steps):
        for m in models:
            order = list(range(len(trees)))
            if r % 2:
                order.reverse()
            for i in order:
                out = step(i, m)
                if r >= a.warmup:
                    res[(i, m)].append(out)
        print(f"round {r + 1}/{a.warmup + a.steps} done", file=sys.stderr, flush=True)
    for p in procs:
        p.stdin.close()
        p.wait()
    rows = []
    for m in models:
        base = res[(0, m)]
        for i, tree in enumerate(trees):
            s = res[(i, m)]
            tok = sum(x["tokens"] for x in s) / sum(x["seconds"] for x in s)
            paired = [b["seconds"] / x["seconds"] for b, x in zip(base, s)]  # >1: faster than the first tree
            paired_cpu = [b["cpu"] / x["cpu"] for b, x in zip(base, s)]
            rows.append({"model": m, "tree": tree, "steps": len(s), "params": params[i][m],
                         "ms_per_step_median": round(1e3 * statistics.median(x["seconds"] for x in s), 1),
                         "tokens_per_s": round(tok, 1),
                         "x_first_tokens_per_s": round(tok / (sum(x["tokens"] for x in base)
                                                              / sum(x["seconds"] for x in base)), 3),
                         "x_first_paired_median": round(statistics.median(paired), 3),
                         "x_first_paired_cpu_median": round(statistics.median(paired_cpu), 3),
                         "paired": [round(v, 3) for v in paired]})
    for row in rows:
        print(f"{row['model']:12s} {Path(row['tree']).name:18s} {row['ms_per_step_median']:9.1f} ms "
              f"{row['tokens_per_s']:9.0f} tok/s  x{row['x_first_tokens_per_s']:.2f} (paired median "
              f"x{row['x_first_paired_median']:.2f}, cpu x{row['x_first_paired_cpu_median']:.2f})")
    if a.json:
        Path(a.json).write_text(json.dumps({"trees": trees, "threads": a.threads, "batch_size": a.batch_size,
                                            "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker()
    else:
        main()
