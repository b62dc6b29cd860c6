"""DDP (issue 4): the same command under torchrun with 2 CPU processes (gloo) takes the same steps as one
process with the same global batch (dropout 0: the processes' dropout streams differ by design)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

ARGS = ["train", "code-exec", "--vars", "3", "--length", "8", "--sizes", "64,24,24", "--model", "delta-rnn",
        "--d-model", "16", "--layers", "1", "--heads", "2", "--batch-size", "8", "--threads", "1", "--steps", "10",
        "--eval-interval", "5", "--log-interval", "1", "--dropout", "0"]


def _env():
    e = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    e.pop("FASTWEIGHTS_FAULT", None)
    return e


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    p1 = subprocess.run([sys.executable, "-m", "fastweights.cli", *ARGS, "--out", str(one)], capture_output=True,
                        text=True, env=_env(), timeout=180)
    assert p1.returncode == 0, p1.stderr
    p2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         "-m", "fastweights.cli", *ARGS, "--out", str(two)], capture_output=True, text=True,
                        env=_env(), timeout=300)
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert "on 2 processes" in p2.stderr
    r1, r2 = _records(one), _records(two)
    assert [(r["step"], r["split"]) for r in r1] == [(r["step"], r["split"]) for r in r2]
    for a, b in zip(r1, r2):
        for key in ("loss", "print_acc", "seq_acc"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], a["split"], key)
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2
    from safetensors.torch import load_file

    w1 = load_file(str(one / "checkpoints" / "step-00000010" / "model.safetensors"))
    w2 = load_file(str(two / "checkpoints" / "step-00000010" / "model.safetensors"))
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5)
    # the per-process RNG states are all saved
    state = torch.load(two / "checkpoints" / "step-00000010" / "trainer.pt", weights_only=True)
    assert len(state["rng"]) == 2 and state["world_size"] == 2
