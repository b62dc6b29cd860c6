"""CPU seconds per training step (on consecutive segments of the training prefix) of every registered model
at the ``tiny`` preset (one thread), used to choose each model's --steps so that its cosine schedule ends near
the common CPU budget (run_all.sh).

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \
    .venv/bin/python results/wikitext103/step_cost.py --steps 6 --json results/wikitext103/step_cost.json
"""
import argparse
import json
import time

import torch

from fastweights.layers import layer_names
from fastweights.models import build_model
from fastweights.train.lm_config import LMConfig

p = argparse.ArgumentParser()
p.add_argument("--data", default="/work/shared/data/wikitext-103")
p.add_argument("--train-file", default="/work/shared/data/wikitext-103/wiki.train.prefix.tokens")
p.add_argument("--cache-dir", default="runs/lm/cache")
p.add_argument("--steps", type=int, default=8)
p.add_argument("--json")
p.add_argument("--models", default=",".join(layer_names()))
p.add_argument("--set", default="{}", help="LMConfig overrides as a Python dict, e.g. \"{'batch_size': 8}\"")
args = p.parse_args()
torch.set_num_threads(1)
from fastweights.tasks.wikitext import load_corpus

corpus = load_corpus(args.data, args.train_file, args.cache_dir)
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
    json.dump(rows, open(args.json, "w"), indent=2)
