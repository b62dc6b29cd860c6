"""CPU seconds of one training step (forward, backward, clipping, Adam) of every registered model on the
same batches of a sweep setting, measured side by side in one process on one thread, the models
interleaved (round r times every model once), so load on the machine falls on all of them alike.

    python results/algorithmic/scripts/step_cost.py DATA_DIR [--rounds 3] [--json OUT]

DATA_DIR is a ``fastweights data`` directory (e.g. runs/alg/data/v3). Prints the median CPU seconds per
step and each model's ratio to the cheapest. The first step of each model is a warm-up and not counted.
``--rounds 1 --models lstm --batch-size 8`` is a quick check that it runs; ``--json OUT`` also writes every
measured time.
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

MODELS = ["lstm", "transformer", "lt", "deltanet", "delta-mlp", "delta-delta", "delta-rnn", "delta-lstm", "rdn"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batch-size", type=int, default=64, help="examples per batch (default 64, the sweep's)")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    splits = load_splits(args.data_dir)
    task = splits.meta["task"]
    train_set = EncodedSplit(task, splits.train)
    sampler = ResumableBatchSampler(len(train_set), args.batch_size, 0)
    batches = list(zip(range(args.rounds + 1), make_loader(train_set, sampler)))
    runs = {}
    for m in args.models.split(","):
        cfg = TrainConfig(task=task, model=m, out="unused")
        model, opt = seeded_model_and_optimizer(cfg, 0, torch.device("cpu"))
        runs[m] = (cfg, model, opt, [])
    for r, batch in batches:
        for m, (cfg, model, opt, times) in runs.items():
            t0 = time.process_time()
            obj = objective(task, _forward(model, task, batch), batch, cfg.loss_positions)
            opt.zero_grad(set_to_none=True)
            (obj["loss_sum"] / max(obj["loss_count"], 1)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if r > 0:
                times.append(time.process_time() - t0)
    med = {m: statistics.median(t) for m, (_, _, _, t) in runs.items()}
    low = min(med.values())
    tokens = [int(b["lengths"].sum()) for _, b in batches[1:]]
    print(f"{task}, {args.data_dir}: batch {args.batch_size}, {statistics.mean(tokens):.0f} tokens per batch, "
          f"{args.rounds} rounds, 1 thread")
    print("| model | CPU s per step (median) | x cheapest | steps in 10 CPU-minutes |")
    print("|---|---:|---:|---:|")
    for m, s in med.items():
        print(f"| {m} | {s:.2f} | {s / low:.1f} | {600 / s:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"task": task, "rounds": args.rounds, "seconds": {m: t for m, (*_, t) in runs.items()}}, f,
                      indent=1)


if __name__ == "__main__":
    main()
