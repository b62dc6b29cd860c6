"""Profile of one delta_rule chunk forward+backward at (B,H,T,D) = (16,8,256,16), float32, 2 threads.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python results/speed/delta_rule_vs_sdpa_profile.py
    (cd /tmp/dr-base && PYTHONPATH=/tmp/dr-base OMP_WAIT_POLICY=PASSIVE /work/main/.venv/bin/python \
        /work/main/results/speed/delta_rule_vs_sdpa_profile.py)        # the baseline tree
"""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

import fastweights.ops.delta_rule  # noqa: F401
from fastweights.ops.registry import OPS

m = sys.modules["fastweights.ops.delta_rule"]
torch.set_num_threads(2)
B, H, T, D = 16, 8, 256, 16
x = OPS["delta_rule"].make_inputs(B, T, H, D, dtype=torch.float32, seed=0, with_state=False).inputs
go = torch.randn(B, T, H, D, generator=torch.Generator().manual_seed(0))


def f():
    for t in x.values():
        t.grad = None
    m.delta_rule(x["q"], x["k"], x["v"], x["beta"], impl="chunk")[0].backward(go)


for _ in range(3):
    f()
with profile(activities=[ProfilerActivity.CPU]) as p:
    for _ in range(10):
        f()
print(m.__file__)
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
