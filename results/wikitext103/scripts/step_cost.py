"""CPU seconds per training step (on consecutive segments of the training prefix) of every registered model
at the ``tiny`` preset (one thread), used to choose each model's --steps so that its cosine schedule ends near
the common CPU budget (run_all.sh).

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \
    python results/wikitext103/scripts/step_cost.py --steps 6 --json results/wikitext103/records/step_cost.json

``--data`` defaults to ``$FASTWEIGHTS_DATA/wikitext-103`` (FASTWEIGHTS_DATA defaults to ``../shared/data``
beside the repository), ``--train-file`` to the training prefix in it. ``--steps 1 --models lstm`` is a
quick check that it runs.
"""
import argparse
import json
import os
import time
from pathlib import Path

import torch

from fastweights.layers import layer_names
from fastweights.models import build_model
from fastweights.tasks.wikitext import load_corpus
from fastweights.train.lm_config import LMConfig

REPO = Path(__file__).resolve().parents[3]


def default_data() -> Path:
    """``$FASTWEIGHTS_DATA/wikitext-103``; FASTWEIGHTS_DATA defaults to ``shared/data`` beside the repository."""
    return Path(os.environ.get("FASTWEIGHTS_DATA") or REPO.parent / "shared" / "data") / "wikitext-103"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="WikiText-103 directory (default $FASTWEIGHTS_DATA/wikitext-103)")
    p.add_argument("--train-file", help="default DATA/wiki.train.prefix.tokens")
    p.add_argument("--cache-dir", default="runs/lm/cache")
    p.add_argument("--steps", type=int, default=8, help="timed steps per model (after 2 untimed ones)")
    p.add_argument("--json", help="write {model: CPU-s per step} here")
    p.add_argument("--models", default=",".join(layer_names()))
    p.add_argument("--set", default="{}", help="LMConfig overrides as a Python dict, e.g. \"{'batch_size': 8}\"")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = Path(args.data) if args.data else default_data()
    corpus = load_corpus(data, args.train_file or data / "wiki.train.prefix.tokens", args.cache_dir)
    V = len(corpus.vocab)
    rows = {}
    for name in args.models.split(","):
        cfg = LMConfig(data_dir="-", model=name, preset="tiny", **eval(args.set))
        torch.manual_seed(0)
        model = build_model(cfg.model_config(V))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        n = cfg.batch_size * (cfg.segment_len + 1)
        for i in range(args.steps + 2):
            if i == 2:
                t0 = time.process_time()
            ids = torch.from_numpy(corpus.train[i * n:(i + 1) * n].astype("int64")).view(cfg.batch_size, -1)
            loss, _ = model.lm_loss(ids[:, :-1], ids[:, 1:])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            opt.step()
        rows[name] = (time.process_time() - t0) / args.steps
        print(f"{name:<12} {rows[name]:.3f} CPU-s/step", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
