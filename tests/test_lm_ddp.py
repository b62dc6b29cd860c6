"""DDP for the language model (issue 5): the same ``train lm`` command under torchrun with 2 CPU processes
(gloo), carrying the state, takes the same steps as one process with the same global batch (dropout 0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from .test_lm import TINY_FLAGS, write_corpus


def _env():
    e = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    e.pop("FASTWEIGHTS_FAULT", None)
    return e


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_match_one_with_carried_state(tmp_path):
    data = write_corpus(tmp_path / "data")
    args = ["train", "lm", "--data", str(data), "--cache-dir", str(tmp_path / "cache"), *TINY_FLAGS, "--steps", "6",
            "--eval-interval", "3", "--log-interval", "1", "--dropout", "0", "--carry-state"]
    one, two = tmp_path / "one", tmp_path / "two"
    p1 = subprocess.run([sys.executable, "-m", "fastweights.cli", *args, "--out", str(one)], capture_output=True,
                        text=True, env=_env(), timeout=180)
    assert p1.returncode == 0, p1.stderr
    p2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         "-m", "fastweights.cli", *args, "--out", str(two)], capture_output=True, text=True,
                        env=_env(), timeout=300)
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert "on 2 processes" in p2.stderr
    r1, r2 = _records(one), _records(two)
    assert [(r["step"], r["split"]) for r in r1] == [(r["step"], r["split"]) for r in r2]
    for a, b in zip(r1, r2):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (a["step"], a["split"])
    state = torch.load(two / "checkpoints" / "step-00000006" / "trainer.pt", weights_only=True)
    assert len(state["rng"]) == 2 and len(state["carry"]) == 2 and state["world_size"] == 2
    assert state["carry"][0]["pos"].shape == (2,)  # each process carries the state of its 2 of the 4 streams
