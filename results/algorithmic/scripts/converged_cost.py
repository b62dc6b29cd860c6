"""CPU seconds of one training step and of one validation forward batch, per model and model size, on the
batches of a ``fastweights data`` directory: what results/algorithmic/converged_plan.md multiplies out.

    python results/algorithmic/scripts/converged_cost.py DATA_DIR --models lstm,rdn \
        --sizes 2x128x4,4x256x16 [--rounds 2] [--threads 1] [--json OUT]

A size is LAYERSxD_MODELxHEADS. Everything runs in one process, the (size, model) cases interleaved round by
round (round 0 is a warm-up), so load on the machine falls on all of them alike. A step is forward,
backward, clipping and Adam on a batch of 64 (the recipe's); the validation figure is a no-grad forward of
the same batch (a validation of the 1k split is about 1000/64 of them). Prints the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from fastweights.tasks import load_splits
from fastweights.train.config import TrainConfig
from fastweights.train.data import EncodedSplit, ResumableBatchSampler, make_loader, objective
from fastweights.train.driver import seeded_model_and_optimizer
from fastweights.train.loop import _forward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir")
    ap.add_argument("--models", required=True)
    ap.add_argument("--sizes", default="2x128x4")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    splits = load_splits(args.data_dir)
    task = splits.meta["task"]
    train_set = EncodedSplit(task, splits.train)
    sampler = ResumableBatchSampler(len(train_set), 64, 0)
    batches = list(zip(range(args.rounds + 1), make_loader(train_set, sampler)))
    cases = {}
    for size in args.sizes.split(","):
        layers, width, heads = (int(x) for x in size.split("x"))
        for m in args.models.split(","):
            cfg = TrainConfig(task=task, model=m, out="unused", num_layers=layers, d_model=width, num_heads=heads)
            model, opt = seeded_model_and_optimizer(cfg, 0, torch.device("cpu"))
            cases[(size, m)] = (cfg, model, opt, [], [])
    for r, batch in batches:
        for (size, m), (cfg, model, opt, steps, fwds) in cases.items():
            t0 = time.process_time()
            obj = objective(task, _forward(model, task, batch), batch, cfg.loss_positions)
            opt.zero_grad(set_to_none=True)
            (obj["loss_sum"] / max(obj["loss_count"], 1)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            t1 = time.process_time()
            model.eval()
            with torch.no_grad():
                _forward(model, task, batch)
            model.train()
            t2 = time.process_time()
            if r > 0:
                steps.append(t1 - t0)
                fwds.append(t2 - t1)
            print(f"round {r} {size} {m}: step {t1 - t0:.2f} s, forward {t2 - t1:.2f} s", flush=True)
    rows = [{"task": task, "size": size, "model": m, "threads": args.threads,
             "step_s": statistics.median(steps), "forward_s": statistics.median(fwds),
             "params": sum(p.numel() for p in model.parameters()), "steps": steps, "forwards": fwds}
            for (size, m), (_, model, _, steps, fwds) in cases.items()]
    for row in rows:
        print(f"{row['task']:10} {row['size']:10} {row['model']:12} step {row['step_s']:7.3f} CPU-s  "
              f"forward {row['forward_s']:7.3f} CPU-s  {row['params']:>10,} parameters")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
