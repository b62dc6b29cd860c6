"""The torch profile of real training steps (the step ``fastweights bench train`` times), for issue 15's
"profile of one step before and after".

    python results/speed/scripts/profile_step.py [--tree DIR] [--task code-exec] [--models deltanet,rdn]
        [--precision fp32] [--steps 3] [--threads 2] [--rows 12] [--json PATH]

``--tree DIR`` profiles the fastweights package found in DIR (e.g. a git worktree of f5cf0a7) instead of this one:
the step is built by this checkout's ``fastweights/bench/train.py`` (which uses only long-standing APIs), run
with DIR first on the import path, as ``bench train --baseline`` does. Prints, per model, the share of the
steps' self CPU time of the top operators (after 2 untimed warm-up steps).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BENCH = REPO / "fastweights" / "bench" / "train.py"


def profile(task: str, model: str, precision: str, steps: int, threads: int, rows: int) -> dict:
    import runpy

    import torch

    torch.set_num_threads(threads)
    bench = runpy.run_path(str(BENCH))  # its functions import fastweights by absolute name: the tree's
    step = bench["_build_case"](task, model, precision, [2000, 200, 200], 64, 0, {})[0]
    step()
    step()
    with torch.profiler.profile() as prof:
        tokens = sum(step() for _ in range(steps))
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    import fastweights

    return {"model": model, "task": task, "precision": precision, "steps": steps, "tokens": tokens,
            "package": str(Path(fastweights.__file__).parent), "self_cpu_ms_per_step": total / 1e3 / steps,
            "top": [{"op": e.key, "calls_per_step": e.count / steps, "share": e.self_cpu_time_total / total}
                    for e in events[:rows]]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", help="profile the fastweights package in this directory")
    ap.add_argument("--task", default="code-exec", choices=["code-exec", "listops"])
    ap.add_argument("--models", default="lstm,transformer,deltanet,delta-rnn,rdn")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=12)
    ap.add_argument("--json", help="also write the profiles as JSON")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.rows < 1 or args.threads < 1:
        ap.error(f"--steps, --rows and --threads must be positive, got {args.steps}, {args.rows}, {args.threads}")
    models = [m for m in args.models.split(",") if m]
    if args.worker:
        out = [profile(args.task, m, args.precision, args.steps, args.threads, args.rows) for m in models]
        print(json.dumps(out))
        return 0
    if args.tree and not (Path(args.tree) / "fastweights" / "__init__.py").is_file():
        ap.error(f"--tree {args.tree}: no fastweights package there")
    env = dict(os.environ)
    if args.tree:
        env["PYTHONPATH"] = str(Path(args.tree).resolve()) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "--worker", "--task", args.task, "--models", ",".join(models),
           "--precision", args.precision, "--steps", str(args.steps), "--threads", str(args.threads),
           "--rows", str(args.rows)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd="/")
    if res.returncode:
        sys.stderr.write(res.stderr)
        return res.returncode
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for p in out:
        print(f"\n{p['model']}, {p['task']}, {p['precision']}: {p['self_cpu_ms_per_step']:.0f} ms self CPU per step "
              f"({p['package']})\n\n| op | calls/step | share |\n|---|---:|---:|")
        for r in p["top"]:
            print(f"| `{r['op']}` | {r['calls_per_step']:g} | {100 * r['share']:.1f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
