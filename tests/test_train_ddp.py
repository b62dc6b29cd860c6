"""DDP (issue 4): the same command under torchrun with 2 CPU processes (gloo) takes the same steps as one
process with the same global batch (dropout 0: the processes' dropout streams differ by design). The one-process
reference runs in this process (no torch start-up); the two processes are a real torchrun launch."""

from __future__ import annotations

import json

import pytest
import torch

from .helpers import cli_in_process, read_records, torchrun

ARGS = ["train", "code-exec", "--vars", "3", "--length", "8", "--sizes", "64,24,24", "--model", "delta-rnn",
        "--d-model", "16", "--layers", "1", "--heads", "2", "--batch-size", "8", "--threads", "1", "--steps", "10",
        "--eval-interval", "5", "--log-interval", "1", "--dropout", "0"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    cli_in_process(capsys, *ARGS, "--out", one, check=0)
    p2 = torchrun(*ARGS, "--out", two)
    assert "on 2 processes" in p2.stderr
    r1, r2 = read_records(one), read_records(two)
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
