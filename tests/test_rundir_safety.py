"""Issue 20, the run directory: one owner at a time (a lock, taken over from a killed process), resume that
recovers from a missing or damaged ``last`` checkpoint or refuses, fresh starts only in new, empty or
failed-start directories, garbage collection of its own checkpoints only, SHA-256-checked checkpoints, retries
after a failed start, and the stop signal in the summary. Tiny runs; the CLI in this process except where a
second real process is the point."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastweights.train import rundir
from fastweights.train.checkpoint import (CheckpointError, load_checkpoint, recover, save_checkpoint,
                                          write_json_atomic)
from fastweights.train.common import StopSignals

from .helpers import cli_env, cli_in_process, cli_subprocess, read_records

TINY = ["--d-model", "16", "--layers", "1", "--heads", "2", "--batch-size", "8", "--threads", "1"]
LISTOPS = ["listops", "--depth", "3", "--sizes", "48,24,24", "--model", "lstm", *TINY]


def one_error(proc, *needles):
    lines = proc.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("fastweights: error")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def snapshot(d: Path) -> dict:
    """Every file under ``d`` (but the lock file) with its bytes."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != rundir.LOCK}


def train_listops(capsys, run, *extra, check=0):
    return cli_in_process(capsys, "train", *LISTOPS, "--out", str(run), *extra, check=check)


def last(run, which="last"):
    return json.loads((run / "checkpoints" / f"{which}.json").read_text())


# ------------------------------------------------------------------------------------------ 1. one owner

def test_a_second_process_is_refused_and_a_killed_owners_lock_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    owner = subprocess.Popen([sys.executable, "-m", "fastweights.cli", "train", *LISTOPS, "--steps", "100000",
                              "--eval-interval", "100000", "--save-interval", "2", "--log-interval", "1", "--out",
                              str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        deadline = time.time() + 90
        while not ((run / "checkpoints" / "last.json").exists() and (run / "config.json").exists()):
            assert time.time() < deadline and owner.poll() is None, "the owner never saved a checkpoint"
            time.sleep(0.1)
        assert f"{owner.pid}@" in (run / rundir.LOCK).read_text()
        for argv in (["train", "listops", "--out", str(run), "--resume"],  # would truncate its metrics
                     ["train", *LISTOPS, "--out", str(run)]):  # would write another model's config
            one_error(cli_in_process(capsys, *argv), str(run), f"pid {owner.pid}", "in use")
        assert (run / "config.json").exists() and json.loads((run / "config.json").read_text())["model"] == "lstm"
        # evaluating a run being trained is fine (evals.json is written atomically, the checkpoints only read)
        cli_in_process(capsys, "eval", str(run), "--checkpoint", "last", "--json", check=0)
        owner.send_signal(signal.SIGKILL)
        owner.communicate(timeout=60)
    finally:
        if owner.poll() is None:
            owner.kill()
    step = last(run)["step"]
    proc = cli_in_process(capsys, "train", "listops", "--out", str(run), "--resume", "--steps", str(step + 2),
                          check=0)
    assert f"taking over the lock of pid {owner.pid}" in proc.stderr
    assert last(run)["step"] == step + 2 and (run / rundir.LOCK).read_text() == ""  # released when done
    assert [r["step"] for r in read_records(run, "train")][-2:] == [step + 1, step + 2]


def test_lock_is_exclusive_between_open_files_and_released(tmp_path):
    """A lock held through another open file (as another process holds it) refuses a start, naming the owner;
    a start that fails before writing anything leaves the directory as it found it."""
    run = tmp_path / "r"
    run.mkdir()
    fd = os.open(run / rundir.LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242@elsewhere\n")
        with pytest.raises(rundir.RunDirError, match=r"in use by another fastweights process \(pid 4242 on host "
                                                     r"elsewhere\)") as e:
            rundir.claim(run, resume=False)
        assert e.value.field == "out"
    finally:
        os.close(fd)
    rundir.claim(run, resume=False)  # the kernel dropped the lock with the file: taken over
    assert rundir.holds(run)
    rundir.release(run)
    assert not rundir.holds(run) and not (run / rundir.LOCK).exists() and run.is_dir()  # the user's directory
    rundir.claim(tmp_path / "new", resume=False)
    rundir.release(tmp_path / "new")
    assert not (tmp_path / "new").exists()  # created by the claim, nothing written: removed


def test_json_written_atomically_leaves_no_temporary_file_on_failure(tmp_path):
    path = tmp_path / "evals.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["evals.json"]


# ------------------------------------------------------------------------------------------ 2. resume recovers

def test_resume_without_last_json_recovers_from_the_newest_valid_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    train_listops(capsys, run, "--steps", "6", "--eval-interval", "3", "--log-interval", "1")
    best = last(run, "best")
    (run / "checkpoints" / "last.json").unlink()
    proc = cli_in_process(capsys, "train", "listops", "--out", str(run), "--resume", "--steps", "8", check=0)
    assert "last.json is missing; resuming from" in proc.stderr and "step-00000006 (step 6)" in proc.stderr
    assert [r["step"] for r in read_records(run, "train")] == list(range(1, 9))  # not restarted from step 0
    assert last(run)["step"] == 8 and last(run, "best") in (best, last(run))
    assert (run / "checkpoints" / last(run, "best")["dir"]).is_dir()


def test_resume_with_no_checkpoint_refuses_once_something_was_trained(tmp_path, capsys):
    run = tmp_path / "run"
    killed = cli_subprocess("train", *LISTOPS, "--steps", "10", "--save-interval", "5", "--eval-interval", "5",
                            "--log-interval", "1", "--out", str(run), fault="kill-at-step:3")
    assert killed.returncode == -signal.SIGKILL and not (run / "checkpoints" / "last.json").exists()
    before = snapshot(run)
    one_error(cli_in_process(capsys, "train", "listops", "--out", str(run), "--resume"), "nothing to resume from",
              "metrics up to step 3")
    assert snapshot(run) == before
    # nothing trained yet (a config, no metrics record, no checkpoint): --resume starts at step 0 and says so
    (run / "metrics.jsonl").write_text("")
    proc = cli_in_process(capsys, "train", "listops", "--out", str(run), "--resume", check=0)
    assert "nothing trained yet: starting from step 0" in proc.stderr and last(run)["step"] == 10


# ------------------------------------------------------------------------------------------ 3. not a run

def test_a_fresh_start_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    run = tmp_path / "mine"
    (run / "checkpoints" / "step-precious").mkdir(parents=True)
    (run / "checkpoints" / "step-precious" / "weights.bin").write_bytes(b"precious")
    (run / "metrics.jsonl").write_text("my own notes\n")
    (run / "data").mkdir()
    (run / "data" / "meta.json").write_text(json.dumps({"task": "listops"}))
    before = snapshot(run)
    one_error(train_listops(capsys, run, "--steps", "2", check=None), str(run), "not empty", "no fastweights run")
    assert snapshot(run) == before
    (run / "metrics.jsonl").unlink()
    (run / "checkpoints" / "step-precious" / "weights.bin").unlink()
    (run / "checkpoints" / "step-precious").rmdir()
    (run / "checkpoints" / "step-00000001").mkdir()  # named like a checkpoint: a run to resume, not to overwrite
    one_error(train_listops(capsys, run, "--steps", "2", check=None), "already holds a run")


def test_garbage_collection_deletes_only_checkpoints_it_created(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "step-precious").mkdir(parents=True)
    (root / "step-00000001").mkdir()  # the user's copy, named like a checkpoint
    (root / "step-00000001" / "note.txt").write_text("keep")
    model = torch.nn.Linear(2, 2)
    for step in (2, 3, 4):
        save_checkpoint(root, model, {"x": step}, step, pointers=("last", "best") if step == 2 else ("last",))
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert names == ["step-00000001", "step-00000002", "step-00000004", "step-precious"]
    assert json.loads((root / "created.json").read_text())["dirs"] == ["step-00000002", "step-00000004"]


# ------------------------------------------------------------------------------------------ 5. checksums

def _damage(path: Path, offset: int = 200, n: int = 400) -> None:
    data = bytearray(path.read_bytes())
    data[offset:offset + n] = b"\xff" * n
    path.write_bytes(bytes(data))


def test_damaged_weights_are_detected_on_every_load_and_resume_falls_back(tmp_path, capsys):
    run = tmp_path / "run"
    train_listops(capsys, run, "--steps", "6", "--eval-interval", "3", "--save-interval", "100",
                  "--log-interval", "1", "--lr", "1e-12")  # the valid loss stays: best stays at 3
    assert last(run)["step"] == 6 and last(run, "best")["step"] == 3
    weights = run / "checkpoints" / "step-00000006" / "model.safetensors"
    _damage(weights, offset=len(weights.read_bytes()) - 500)  # inside the tensor data: a valid header
    one_error(cli_in_process(capsys, "eval", str(run), "--checkpoint", "last"), "model.safetensors", "damaged")
    cli_in_process(capsys, "eval", str(run), check=0)  # the best checkpoint is intact
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(run / "checkpoints")
    proc = cli_in_process(capsys, "train", "listops", "--out", str(run), "--resume", "--steps", "7", check=0)
    assert "damaged" in proc.stderr and "step-00000003 (step 3), the newest checkpoint that validates" in proc.stderr
    assert [r["step"] for r in read_records(run, "train")] == [1, 2, 3, 4, 5, 6, 7]
    assert last(run)["step"] == 7
    # a damaged trainer.pt too; with every checkpoint damaged, one line and nothing changed
    for d in (run / "checkpoints").iterdir():
        if d.is_dir():
            _damage(d / "trainer.pt")
    before = snapshot(run)
    one_error(cli_in_process(capsys, "train", "listops", "--out", str(run), "--resume"), "validates", "damaged")
    assert snapshot(run) == before


def test_checkpoints_without_checksums_still_load(tmp_path):
    model = torch.nn.Linear(3, 2)
    cdir = save_checkpoint(tmp_path, model, {"x": 1}, step=1)
    assert set(json.loads((cdir / "checksums.json").read_text())["sha256"]) == {"model.safetensors", "trainer.pt"}
    (cdir / "checksums.json").unlink()
    with pytest.raises(CheckpointError, match="checksums.json is missing"):  # format 2 always has them
        load_checkpoint(tmp_path)
    state = torch.load(cdir / "trainer.pt", weights_only=True)
    torch.save({**state, "format_version": 1}, cdir / "trainer.pt")  # as written before checksums existed
    fresh = torch.nn.Linear(3, 2)
    ptr, st = load_checkpoint(tmp_path, fresh)
    assert ptr["step"] == 1 and st["x"] == 1 and torch.equal(fresh.weight, model.weight)
    assert recover(tmp_path, fresh)[2] is None


# ------------------------------------------------------------------------------------------ 6. failed starts

def test_a_failed_start_leaves_nothing_that_blocks_a_retry(tmp_path, capsys):
    bad = tmp_path / "bad"
    assert cli_in_process(capsys, "data", "listops", "--depth", "3", "--sizes", "40,16,16", "--out", str(bad)
                          ).returncode == 0
    lines = (bad / "train.txt").read_text().splitlines()
    lines[3] = lines[3].replace("[MAX", "[POW", 1) if "[MAX" in lines[3] else "[POW 1 2 ]\t1"
    (bad / "train.txt").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    one_error(cli_in_process(capsys, "train", "listops", "--model", "lstm", *TINY, "--data", str(bad), "--steps", "2",
                             "--out", str(run)), "train.txt:4", "'[POW'")
    assert not run.exists()  # created by the start, left as it was found
    # leftovers of a start that failed later (config, data, an empty metrics file), under a lock file
    run.mkdir()
    (run / rundir.LOCK).write_text("")
    (run / "config.json").write_text(json.dumps({"task": "listops", "model": "rdn"}))
    (run / "data").mkdir()
    (run / "data" / "meta.json").write_text("{}")
    (run / "metrics.jsonl").write_text("")
    proc = train_listops(capsys, run, "--steps", "2")
    assert "starting afresh" in proc.stderr
    assert json.loads((run / "config.json").read_text())["model"] == "lstm" and last(run)["step"] == 2
    assert json.loads((run / "data" / "meta.json").read_text())["sizes"]["train"] == 48  # regenerated


# ------------------------------------------------------------------------------------------ 8. stop signals

def test_stop_signals_name_the_signal_and_its_exit_code():
    assert StopSignals.exit_code("SIGTERM") == 143 and StopSignals.exit_code("SIGINT") == 130
    assert StopSignals.exit_code(None) is None and StopSignals.exit_code("time budget") is None
    with StopSignals() as s:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert s.received == "SIGINT"
