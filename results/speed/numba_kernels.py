"""Forward+backward time of the fused numba CPU kernels of the recurrent FWP ops (issue 15): this tree
against a baseline tree (a git worktree of an older commit), in one process, interleaved.

The baseline's ``fastweights`` is loaded under another package name (``fwbase``), so both trees' ops run in
the same process on the same inputs (made by this tree's registry), alternating call by call.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python results/speed/numba_kernels.py --baseline /tmp/kern-base \
        --out results/speed/numba_kernels.json
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import sys
import time

import torch

SHAPES = {"code_exec": (64, 455, 4, 32), "formal": (32, 50, 4, 16)}
OPS = ["recurrent_delta_rule", "delta_rnn", "delta_lstm", "srwm"]


def load_tree(tree: str, name: str = "fwbase"):
    """``fastweights.ops.registry`` of another tree, imported as package ``name``."""
    pkg = os.path.join(tree, "fastweights")
    spec = importlib.util.spec_from_file_location(name, os.path.join(pkg, "__init__.py"),
                                                  submodule_search_locations=[pkg])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module(f"{name}.ops.registry")


def recurrent_inputs(op, B, T, H, D):
    """Inputs of the Delta RNN's / Delta LSTM's recurrent autograd Function (the numba part of their fused
    path; the rest is delta_rule's chunkwise path, which these kernels do not touch)."""
    g = torch.Generator().manual_seed(0)
    G = (3,) if op == "delta_lstm" else ()
    r = lambda *s, scale=0.3: (torch.randn(*s, generator=g) * scale).requires_grad_()
    k = torch.softmax(torch.randn(B, T, H, *G, D, generator=g), -1).requires_grad_()
    rb = torch.sigmoid(torch.randn(B, T, H, *G, generator=g)).requires_grad_()
    args = [r(B, T, H, *G, D), k, r(B, T, H, *G, D), rb, r(B, H, *G, D, D)]
    args += [r(B, H, D)] * (2 if op == "delta_lstm" else 1)
    return args


def recurrent_fn(reg, op):
    mod = importlib.import_module(reg.__name__.rsplit(".", 1)[0] + "." + op)
    return (mod._DeltaLSTMRecurrent if op == "delta_lstm" else mod._DeltaRNNRecurrent).apply


def step_recurrent(fn, args, cot):
    out = fn(*args)
    (out[0] * cot).sum().backward()


def step(spec, case, cot):
    o, _ = spec.run(case, "fused", output_final_state=False)
    (o * cot).sum().backward()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="/tmp/kern-base")
    ap.add_argument("--ops", nargs="+", default=OPS)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=None)
    ap.add_argument("--part", choices=["op", "recurrent"], default="op",
                    help="recurrent: time only the Delta RNN/LSTM's numba autograd Function, not the whole op")
    args = ap.parse_args()
    from fastweights.ops import registry as new_reg
    base_reg = load_tree(args.baseline)
    records = []
    for op in args.ops:
        for shape in args.shapes:
            B, T, H, D = SHAPES[shape]
            part = args.part if op in ("delta_rnn", "delta_lstm") else "op"
            if part == "recurrent":
                inputs = recurrent_inputs(op, B, T, H, D)
                cot = torch.randn(inputs[0].shape[:3] + (D,), generator=torch.Generator().manual_seed(1))
                trees = {k: (lambda fn: lambda: step_recurrent(fn, inputs, cot))(recurrent_fn(reg, op))
                         for k, reg in (("base", base_reg), ("new", new_reg))}
            else:
                case = new_reg.OPS[op].make_inputs(B, T, H, D, seed=0, with_state=False, requires_grad=True)
                inputs = list(case.inputs.values())
                o, _ = new_reg.OPS[op].run(case, "fused", output_final_state=False)
                cot = torch.randn(o.shape, generator=torch.Generator().manual_seed(1))
                trees = {k: (lambda spec: lambda: step(spec, case, cot))(reg.OPS[op])
                         for k, reg in (("base", base_reg), ("new", new_reg))}
            for nt in args.threads:
                torch.set_num_threads(nt)
                times = {k: [] for k in trees}
                for k, fn in trees.items():  # warm-up (compiles / loads the cache)
                    fn()
                for r in range(args.reps):
                    for k in (["base", "new"] if r % 2 == 0 else ["new", "base"]):
                        for x in inputs:
                            x.grad = None
                        t0 = time.perf_counter()
                        trees[k]()
                        times[k].append((time.perf_counter() - t0) * 1e3)
                rec = dict(op=op, part=part, shape=shape, B=B, T=T, H=H, D=D, threads=nt,
                           base_ms=statistics.median(times["base"]), new_ms=statistics.median(times["new"]),
                           base_all=times["base"], new_all=times["new"])
                rec["ratio"] = rec["base_ms"] / rec["new_ms"]
                records.append(rec)
                print(f"{op:22s} {part:9s} {shape:9s} thr={nt} base {rec['base_ms']:8.1f} ms  new {rec['new_ms']:8.1f} ms  "
                      f"speedup {rec['ratio']:.2f}x", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(baseline=args.baseline, records=records), f, indent=1)


if __name__ == "__main__":
    main()
