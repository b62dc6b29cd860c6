"""DDP for the language model (issue 5): the same ``train lm`` command under torchrun with 2 CPU processes
(gloo), carrying the state, takes the same steps as one process with the same global batch (dropout 0). The
one-process reference runs in this process (no torch start-up); the two processes are a real torchrun launch."""

from __future__ import annotations

import pytest
import torch

from .helpers import cli_in_process, read_records, torchrun
from .test_lm import TINY_FLAGS, write_corpus


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_match_one_with_carried_state(tmp_path, capsys):
    data = write_corpus(tmp_path / "data")
    args = ["train", "lm", "--data", str(data), *TINY_FLAGS, "--steps", "6",
            "--eval-interval", "3", "--log-interval", "1", "--dropout", "0", "--carry-state"]
    one, two = tmp_path / "one", tmp_path / "two"
    cli_in_process(capsys, *args, "--cache-dir", tmp_path / "cache1", "--out", one, check=0)
    # each rank reads the token cache: a cold one of its own checks that rank 0 builds it before the others load
    p2 = torchrun(*args, "--cache-dir", tmp_path / "cache2", "--out", two)
    assert "on 2 processes" in p2.stderr
    r1, r2 = read_records(one), read_records(two)
    assert [(r["step"], r["split"]) for r in r1] == [(r["step"], r["split"]) for r in r2]
    for a, b in zip(r1, r2):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (a["step"], a["split"])
    state = torch.load(two / "checkpoints" / "step-00000006" / "trainer.pt", weights_only=True)
    assert len(state["rng"]) == 2 and len(state["carry"]) == 2 and state["world_size"] == 2
    assert state["carry"][0]["pos"].shape == (2,)  # each process carries the state of its 2 of the 4 streams
