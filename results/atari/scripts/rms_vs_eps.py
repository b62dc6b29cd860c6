"""How much of each weight tensor's RMSprop step is set by epsilon rather than by the gradient, read from
an RL run's last checkpoint: PyTorch's RMSprop steps a weight by lr * g / (sqrt(v) + eps), where v is the
running mean of g^2, so where sqrt(v) is well below eps the step is about lr * g / eps, far smaller than lr.

    python results/atari/scripts/rms_vs_eps.py RUN_DIR [RUN_DIR ...]

Prints, per weight tensor, the median gradient RMS sqrt(v) and the fraction of its entries with
sqrt(v) < eps, and over all weights the fraction of entries with sqrt(v) < eps.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from fastweights.rl import load_rl_config
from fastweights.rl.actors import build_agent, env_spec
from fastweights.train.checkpoint import load_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="RL run directories (their last checkpoint is read)")
    args = ap.parse_args()
    for run in map(Path, args.runs):
        cfg = load_rl_config(run)
        agent = build_agent(cfg, *env_spec(cfg))
        ptr, trainer = load_checkpoint(run / "checkpoints", agent, "last")
        names = [name for name, _ in agent.named_parameters()]
        opt = trainer["optimizer"]
        group = opt["param_groups"][0]
        eps = group["eps"]
        print(f"\n{run} (step {ptr['step']}, eps {eps:g})\n")
        print("| weight | shape | median sqrt(v) | share below eps |\n|---|---|---:|---:|")
        below = total = 0
        for index in group["params"]:
            rms = opt["state"][index]["square_avg"].sqrt().flatten()
            name = names[index]
            share = float((rms < eps).float().mean())
            below += int((rms < eps).sum())
            total += rms.numel()
            print(f"| {name} | {tuple(opt['state'][index]['square_avg'].shape)} | {float(rms.median()):.1e} "
                  f"| {100 * share:.0f}% |")
        print(f"\nall weights: {100 * below / total:.0f}% of {total:,} entries have sqrt(v) < eps")


if __name__ == "__main__":
    main()
