"""Interleaved fwd+bwd timing: the chunkwise delta rule of this tree vs a baseline copy of delta_rule.py vs causal SDPA.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python results/speed/delta_rule_vs_sdpa.py --base /tmp/dr-base [--json out.json]

The baseline module file is loaded in-process under another name (its relative imports resolve in this tree's
fastweights.ops), so all three are timed round-robin in one process (bench.timing.time_interleaved).
"""
import argparse, importlib.util, json, sys

import torch
import torch.nn.functional as F

from fastweights.bench.timing import fwd_bwd, time_interleaved
import fastweights.ops.delta_rule  # noqa: F401
new = sys.modules["fastweights.ops.delta_rule"]
from fastweights.ops.registry import OPS


def load_base(root):
    spec = importlib.util.spec_from_file_location("fastweights.ops._delta_rule_base", f"{root}/fastweights/ops/delta_rule.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default=None)
    ap.add_argument("--shapes", default="16x8x256x16;8x8x512x32;4x4x1024x64")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    mods = {"new": new}
    if a.base:
        mods["base"] = load_base(a.base)
    out = []
    for s in a.shapes.split(";"):
        B, H, T, D = map(int, s.split("x"))
        case = OPS["delta_rule"].make_inputs(B, T, H, D, dtype=torch.float32, seed=0, with_state=False)
        x = case.inputs
        gen = torch.Generator().manual_seed(0)
        sd = {n: torch.randn(B, H, T, D, generator=gen).requires_grad_() for n in "qkv"}
        gs = torch.randn(B, H, T, D, generator=gen)
        go = torch.randn(B, T, H, D, generator=gen)
        fns = {"sdpa": lambda: fwd_bwd(lambda: F.scaled_dot_product_attention(sd["q"], sd["k"], sd["v"], is_causal=True), sd, gs)}
        for name, m in mods.items():
            fns[name] = (lambda m=m: fwd_bwd(lambda: m.delta_rule(x["q"], x["k"], x["v"], x["beta"], impl="chunk")[0], x, go))
        for r in range(a.rounds):
            ms = time_interleaved(fns, repeats=a.repeats, warmup=2)
            row = {"shape": [B, H, T, D], "round": r, "ms": ms,
                   **{f"{n}_x_sdpa": ms["sdpa"] / ms[n] for n in mods}}
            if "base" in mods:
                row["new_over_base_speedup"] = ms["base"] / ms["new"]
            out.append(row)
            print(s, " ".join(f"{k}={v:.2f}ms" for k, v in ms.items()), " ".join(
                f"{n}_x_sdpa={row[f'{n}_x_sdpa']:.2f}" for n in mods),
                f"speedup={row.get('new_over_base_speedup', float('nan')):.2f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": a.threads, "rows": out}, f, indent=1)


if __name__ == "__main__":
    main()
