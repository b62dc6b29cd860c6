"""The fused numba kernels keep torch's thread count: launching numba's pool (OpenMP layer) once set OpenMP's
thread count to every CPU, so a ``--threads 1`` run used all of them for torch after its first kernel."""

import subprocess
import sys

import pytest

CODE = """
import torch
torch.set_num_threads(1)
from fastweights.ops.registry import OPS
spec = OPS["{op}"]
case = spec.make_inputs(2, 5, 2, 4, with_state=False, requires_grad=False)
spec.fn(**case.inputs, impl="fused")
print(torch.get_num_threads())
"""


@pytest.mark.parametrize("op", ["delta_rnn", "delta_lstm", "recurrent_delta_rule", "srwm"])
def test_first_kernel_keeps_torchs_thread_count(op):
    env = {"OMP_WAIT_POLICY": "PASSIVE", "PATH": "/usr/bin:/bin"}  # no OMP/NUMBA_NUM_THREADS: the pool has every CPU
    proc = subprocess.run([sys.executable, "-c", CODE.format(op=op)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "1"
