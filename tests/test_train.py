"""The training system (issue 4): config validation, the CLI end to end, the run directory, evaluation,
and every reliability promise (atomic checkpoints, exact resume after kill -9, NaN stop, SIGTERM,
damaged checkpoints). Tiny models, tiny splits, ~20-30 steps, one thread.

A torch start-up costs seconds, so the CLI runs in this process (``cli_in_process``) except where a real
process is the point: the end-to-end train/eval run, and the runs that are killed (kill -9, SIGTERM)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastweights.cli import main
from fastweights.train import (CheckpointError, TrainConfig, TrainConfigError, evaluate_run, load_checkpoint,
                               save_checkpoint, train)

from .helpers import cli_env, cli_in_process, cli_subprocess, read_records, strip_timing

TINY = ["--d-model", "16", "--layers", "1", "--heads", "2", "--batch-size", "8", "--threads", "1"]
CODE = ["code-exec", "--vars", "3", "--length", "8", "--sizes", "48,24,24"]
LISTOPS = ["listops", "--depth", "3", "--sizes", "48,24,24"]


records = read_records


def last_step(run: Path, which="last"):
    return json.loads((run / "checkpoints" / f"{which}.json").read_text())["step"]


def error_lines(proc):
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower() or "Traceback" in ln]
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines


# ------------------------------------------------------------------------------------------ config

@pytest.mark.parametrize("field,value", [("task", "lm"), ("num_vars", 4), ("depth", 0), ("sizes", [1, 2]),
                                         ("model", "nope"), ("d_model", 0), ("num_heads", 3), ("dropout", 1.0),
                                         ("steps", 0), ("batch_size", 0), ("lr", float("nan")), ("betas", [0.9]),
                                         ("grad_clip", -1.0), ("loss_positions", "some"), ("seed", -1),
                                         ("eval_interval", 0), ("threads", 0), ("ops", ["MIN", "POW"]),
                                         ("budget_clock", "gpu")])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(TrainConfigError) as e:
        TrainConfig(**{field: value})
    assert e.value.field == field
    assert repr(value)[:8] in str(e.value) or str(value) in str(e.value)


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), float("nan"), "5", True])
def test_config_time_budget_must_be_positive_or_none(value):
    with pytest.raises(TrainConfigError) as e:
        TrainConfig(time_budget_minutes=value)
    assert e.value.field == "time_budget_minutes" and "time_budget_minutes" in str(e.value)
    assert repr(value) in str(e.value)


def test_config_time_budget_accepts_positive_numbers_and_none():
    assert TrainConfig().time_budget_minutes is None
    assert TrainConfig(time_budget_minutes=0.5).time_budget_minutes == 0.5
    assert TrainConfig(time_budget_minutes=3).time_budget_minutes == 3
    cfg = TrainConfig(time_budget_minutes=1.5)
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_config_defaults_are_the_papers_recipe_and_round_trip():
    cfg = TrainConfig()
    assert (cfg.batch_size, cfg.lr, cfg.betas, cfg.dropout) == (64, 3e-4, [0.9, 0.995], 0.1)
    assert cfg.steps == 5000 and cfg.epochs is None
    assert cfg.model_config().pos_encoding == "none"
    assert TrainConfig(model="transformer").model_config().pos_encoding == "sinusoidal"
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(TrainConfigError, match="not both"):
        TrainConfig(steps=3, epochs=2)
    assert TrainConfig(task="listops").model_config().head == "sequence"


@pytest.mark.parametrize("args,flag", [(["--steps", "-3"], "--steps"), (["--steps", "abc"], "--steps"),
                                       (["--heads", "3"], "--heads"), (["--model", "foo"], "--model"),
                                       (["--batch-size", "0"], "--batch-size"), (["--lr", "x"], "--lr"),
                                       (["--vars", "4"], "--vars"), (["--dropout", "1.5"], "--dropout"),
                                       (["--steps", "3", "--epochs", "2"], "--steps"),
                                       (["--time-budget", "-1"], "--time-budget"),
                                       (["--time-budget", "0"], "--time-budget"),
                                       (["--time-budget", "soon"], "--time-budget"),
                                       (["--budget-clock", "user"], "--budget-clock")])
def test_cli_bad_flag_is_one_line_naming_the_flag(args, flag, capsys, tmp_path):
    rc = main(["train", "code-exec", *args, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"fastweights: error: {flag}:"), err
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------ end to end

def test_cli_train_and_eval_code_exec(tmp_path, capsys):
    """The real command end to end: train and eval each in a fresh process."""
    run = tmp_path / "run"
    proc = cli_subprocess("train", *CODE, "--model", "delta-rnn", *TINY, "--steps", "12", "--eval-interval", "6",
                          "--log-interval", "3", "--out", str(run), check=0)
    assert "step 12/12" in proc.stderr and "valid at step 12" in proc.stderr  # plain log lines off a terminal
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "delta-rnn" and cfg["num_vars"] == 3 and cfg["d_model"] == 16 and cfg["steps"] == 12
    assert (run / "data" / "train.txt").exists() and (run / "curves.png").stat().st_size > 1000
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    train_recs, valid_recs = records(run, "train"), records(run, "valid")
    assert [r["step"] for r in train_recs] == [3, 6, 9, 12] and [r["step"] for r in valid_recs] == [6, 12]
    for r in train_recs + valid_recs:
        assert {"loss", "print_acc", "seq_acc"} <= set(r) and 0 <= r["print_acc"] <= 1
    assert train_recs[0]["tokens_per_s"] > 0
    # checkpoint files: safetensors weights, trainer state loadable with weights_only=True
    ckpt = run / "checkpoints" / f"step-{last_step(run):08d}"
    from safetensors.torch import load_file

    weights = load_file(str(ckpt / "model.safetensors"))
    assert any(k.startswith("blocks.0.") for k in weights)
    state = torch.load(ckpt / "trainer.pt", weights_only=True)
    assert {"optimizer", "scheduler", "rng", "epoch", "batch", "step"} <= set(state) and state["step"] == 12
    assert {"torch", "python", "numpy"} <= set(state["rng"][0])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["best_step"] in (6, 12)

    out = cli_subprocess("eval", str(run), "--json", check=0)
    result = json.loads(out.stdout)
    assert result["split"] == "test" and result["examples"] == 24 and result["step"] == summary["best_step"]
    assert 0 <= result["print_acc"] <= 1 and 0 <= result["seq_acc"] <= 1
    text = cli_in_process(capsys, "eval", str(run), check=0).stdout
    assert "print_acc" in text and "seq_acc" in text
    # the same directory is not trained over without --resume
    again = cli_in_process(capsys, "train", *CODE, *TINY, "--steps", "12", "--out", str(run), check=2)
    assert len(error_lines(again)) == 1 and "--out" in again.stderr


def test_listops_in_process_with_data_dir_and_eval(tmp_path):
    assert main(["data", "listops", "--depth", "3", "--sizes", "40,16,16", "--out", str(tmp_path / "d")]) == 0
    cfg = TrainConfig(task="listops", model="rdn", data_dir=str(tmp_path / "d"), d_model=16, num_layers=1,
                      num_heads=2, steps=10, batch_size=8, eval_interval=5, log_interval=5, out=str(tmp_path / "r"),
                      threads=1)
    summary = train(cfg, progress=True)  # the rich bar path
    assert summary["status"] == "completed" and summary["step"] == 10
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["depth"] == 3 and saved["sizes"] == [40, 16, 16]
    result = evaluate_run(tmp_path / "r")
    assert result["examples"] == 16 and 0 <= result["acc"] <= 1 and "print_acc" not in result
    assert {"loss", "acc"} <= set(records(tmp_path / "r", "valid")[0])


def test_time_budget_stops_early_evaluates_saves_and_resumes_the_same_budget(tmp_path, capsys):
    run = tmp_path / "run"
    args = [*CODE, "--model", "delta-rnn", *TINY, "--steps", "1000000", "--eval-interval", "1000000",
            "--log-interval", "1000000"]
    proc = cli_in_process(capsys, "train", *args, "--time-budget", "0.02", "--out", str(run), check=0)  # 1.2 s
    assert "time budget of 0.02 min spent at step" in proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    step = summary["step"]
    assert summary["status"] == "completed" and summary["stopped"] == "time budget"
    assert 1 <= step < 1000000 and summary["total_steps"] == 1000000 and summary["time_budget_minutes"] == 0.02
    assert summary["train_seconds"] >= 1.2
    # what a normal end does: a final train record, validation, checkpoint (last and best) at the step reached
    assert [r["step"] for r in records(run, "train")] == [step]
    assert [r["step"] for r in records(run, "valid")] == [step] and summary["best_step"] == step
    assert last_step(run) == last_step(run, "best") == step
    state = load_checkpoint(run / "checkpoints", which="last")[1]
    assert state["elapsed_s"] >= 1.2
    # resuming continues the same budget: spent, so nothing more is trained
    proc = cli_in_process(capsys, "train", "code-exec", "--out", str(run), "--resume", check=0)
    assert "already spent" in proc.stderr
    again = json.loads((run / "summary.json").read_text())
    assert again["step"] == step and again["stopped"] == "time budget" and last_step(run) == step
    # a larger budget may be given on resume; the earlier time counts towards it (the new budget is what was
    # spent, which the final evaluation and checkpoint may have pushed well past 1.2 s on a loaded machine, plus 1.2 s)
    budget = round(again["train_seconds"] / 60 + 0.02, 4)
    cli_in_process(capsys, "train", "code-exec", "--out", str(run), "--resume", "--time-budget", str(budget),
                   check=0)
    more = json.loads((run / "summary.json").read_text())
    assert more["stopped"] == "time budget" and more["step"] > step and last_step(run) == more["step"]
    assert more["train_seconds"] >= budget * 60 and more["seconds_this_session"] < more["train_seconds"]
    assert json.loads((run / "config.json").read_text())["time_budget_minutes"] == budget


def test_cpu_clock_budget_counts_process_time(tmp_path, monkeypatch):
    """budget_clock="cpu" reads time.process_time: a fake one that runs 1 s per reading ends a 3 s budget
    within a few steps, while the same run on the wall clock trains all its steps."""
    readings = iter(range(0, 10**6))
    monkeypatch.setattr(time, "process_time", lambda: float(next(readings)))
    base = dict(task="listops", model="lstm", depth=2, sizes=[64, 8, 8], d_model=16, num_layers=1, num_heads=2,
                steps=20, batch_size=8, threads=1, time_budget_minutes=0.05, eval_interval=1000, log_interval=1000)
    cpu = train(TrainConfig(**base, out=str(tmp_path / "cpu"), budget_clock="cpu"), progress=False)
    assert cpu["stopped"] == "time budget" and cpu["budget_clock"] == "cpu"
    assert 2 <= cpu["step"] <= 4 and cpu["train_seconds"] > 3
    wall = train(TrainConfig(**base, out=str(tmp_path / "wall")), progress=False)
    assert wall["stopped"] is None and wall["step"] == 20 and wall["budget_clock"] == "wall"


def test_steps_still_cap_a_run_with_a_time_budget(tmp_path):
    cfg = TrainConfig(task="listops", model="lstm", depth=2, sizes=[16, 8, 8], d_model=16, num_layers=1,
                      num_heads=2, steps=3, batch_size=8, out=str(tmp_path / "r"), threads=1, time_budget_minutes=10)
    summary = train(cfg, progress=False)
    assert summary["status"] == "completed" and summary["step"] == 3 and summary["stopped"] is None


def test_epochs_count_whole_passes(tmp_path):
    cfg = TrainConfig(task="listops", model="lstm", depth=2, sizes=[40, 8, 8], d_model=16, num_layers=1,
                      num_heads=2, epochs=2, batch_size=16, eval_interval=100, out=str(tmp_path / "r"), threads=1,
                      log_interval=1)
    summary = train(cfg, progress=False)
    assert summary["step"] == 4  # 40 // 16 = 2 full batches per epoch
    assert [r["epoch"] for r in records(tmp_path / "r", "train")] == [0, 0, 1, 1]


# ------------------------------------------------------------------------------------------ reliability

RESUME_ARGS = [*CODE, "--model", "delta-rnn", *TINY, "--steps", "20", "--eval-interval", "10", "--save-interval",
               "3", "--log-interval", "1", "--dropout", "0.1"]


def test_resume_after_kill_9_gives_the_identical_loss_curve(tmp_path, capsys):
    """The killed run is a real process; the reference and the resumption run in this one."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    cli_in_process(capsys, "train", *RESUME_ARGS, "--out", str(ref), check=0)
    killed = cli_subprocess("train", *RESUME_ARGS, "--out", str(run), fault="kill-at-step:14")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert last_step(run) == 12  # 6 batches per epoch: step 12 ends epoch 2 (after one mid-epoch save at 9)
    assert max(r["step"] for r in records(run)) == 14  # records past the checkpoint exist...
    cli_in_process(capsys, "train", "code-exec", "--out", str(run), "--resume", check=0)
    got, want = records(run), records(ref)  # ...and are replaced by the resumed run's
    assert strip_timing(got) == strip_timing(want)  # bitwise: JSON floats round-trip exactly
    assert [r["step"] for r in got if r["split"] == "train"] == list(range(1, 21))
    a = load_checkpoint(ref / "checkpoints", which="last")[1]
    b = load_checkpoint(run / "checkpoints", which="last")[1]
    assert a["step"] == b["step"] == 20 and torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])


def test_resume_from_mid_epoch_after_kill_is_exact(tmp_path, capsys):
    """The killed run is a real process; the reference and the resumption run in this one."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    args = [*LISTOPS, "--model", "lstm", *TINY, "--steps", "14", "--eval-interval", "7", "--save-interval", "4",
            "--log-interval", "1"]
    cli_in_process(capsys, "train", *args, "--out", str(ref), check=0)
    killed = cli_subprocess("train", *args, "--out", str(run), fault="kill-at-step:10")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert last_step(run) == 8  # 6 batches per epoch: mid-epoch position (epoch 1, batch 2)
    cli_in_process(capsys, "train", "listops", "--out", str(run), "--resume", check=0)
    assert strip_timing(records(run)) == strip_timing(records(ref))


def test_crash_mid_save_leaves_the_previous_checkpoint_loadable(tmp_path, capsys):
    run = tmp_path / "run"
    args = [*CODE, "--model", "deltanet", *TINY, "--steps", "12", "--eval-interval", "100", "--save-interval", "4"]
    proc = cli_subprocess("train", *args, "--out", str(run), fault="kill-in-save:8")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ckpts = run / "checkpoints"
    assert last_step(run) == 4 and any(p.name.startswith(".step-00000008") for p in ckpts.iterdir())
    from fastweights.models import build_model

    model = build_model(TrainConfig.from_dict(json.loads((run / "config.json").read_text())).model_config())
    ptr, state = load_checkpoint(ckpts, model, "last")
    assert ptr["step"] == 4 and state["step"] == 4
    cli_in_process(capsys, "train", "code-exec", "--out", str(run), "--resume", check=0)
    assert last_step(run) == 12 and not any(p.name.startswith(".") for p in ckpts.iterdir() if p.is_dir())


def test_atomic_save_in_process_failure_keeps_previous(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path, model, {"x": 1}, step=1, pointers=("last", "best"))
    saved = model.weight.detach().clone()
    real_save = torch.save

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, model, {"x": 2}, step=2)
    monkeypatch.setattr(torch, "save", real_save)
    fresh = torch.nn.Linear(3, 2)
    ptr, state = load_checkpoint(tmp_path, fresh, "last")
    assert ptr["step"] == 1 and state["x"] == 1
    assert torch.equal(fresh.weight, saved)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, capsys,
                                                                                 monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv("FASTWEIGHTS_FAULT", "nan-at-step:8")
    proc = cli_in_process(capsys, "train", *CODE, "--model", "lt", *TINY, "--steps", "20", "--eval-interval", "5",
                          "--out", str(run), check=1)
    lines = error_lines(proc)
    assert len(lines) == 1 and "loss is nan at step 8" in lines[0] and "step 5" in lines[0], proc.stderr
    assert last_step(run) == 5
    assert max(r["step"] for r in records(run)) <= 7
    result = evaluate_run(run, which="last")
    assert result["step"] == 5


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "fastweights.cli", "train", *CODE, "--model", "deltanet", *TINY,
                             "--steps", "100000", "--eval-interval", "100000", "--log-interval", "1",
                             "--out", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env())
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            if (run / "metrics.jsonl").exists() and records(run):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the run never started")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err  # SIGTERM: saved, then the exit code says it was stopped
    assert "Traceback" not in err and "stopped by SIGTERM" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped" and last_step(run) == summary["step"] >= 1
    state = load_checkpoint(run / "checkpoints", which="last")[1]
    assert state["step"] == summary["step"]


def test_damaged_checkpoints_give_one_line_errors(tmp_path, capsys):
    """In-process CLI calls (a subprocess's one-line errors: the CLI tests of tests/test_tasks.py)."""
    run = tmp_path / "run"
    assert main(["train", *LISTOPS, "--model", "deltanet", *TINY, "--steps", "4", "--eval-interval", "4", "--out",
                 str(run)]) == 0
    capsys.readouterr()

    def one_error(argv, needle):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("fastweights: error:") and needle in err[0], err

    ckpt = run / "checkpoints" / "step-00000004"
    weights = ckpt / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:100])  # truncated
    one_error(["eval", str(run)], "model.safetensors")
    weights.write_bytes(good)
    (ckpt / "trainer.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError):
        load_checkpoint(run / "checkpoints")
    one_error(["train", "listops", "--out", str(run), "--resume"], "trainer.pt")
    (run / "checkpoints" / "last.json").write_text("{not json")
    one_error(["train", "listops", "--out", str(run), "--resume"], "last.json")
    one_error(["eval", str(tmp_path / "nothing")], "nothing")


def test_resume_refuses_to_change_the_model(tmp_path, capsys, monkeypatch):
    cfg = TrainConfig(task="listops", model="lstm", depth=2, sizes=[16, 8, 8], d_model=16, num_layers=1,
                      num_heads=2, steps=2, batch_size=8, out=str(tmp_path / "r"), threads=1)
    train(cfg, progress=False)
    rc = main(["train", "listops", "--out", str(tmp_path / "r"), "--resume", "--d-model", "32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("fastweights: error: --d-model:")
    # more steps is allowed, and continues
    assert main(["train", "listops", "--out", str(tmp_path / "r"), "--resume", "--steps", "4"]) == 0
    assert last_step(tmp_path / "r") == 4
    # the run directory saved absolute may be named relative on resume (it is the same directory)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "listops", "--out", "./r", "--resume", "--steps", "5"]) == 0
    assert last_step(tmp_path / "r") == 5
    rc = main(["train", "listops", "--out", "./r", "--resume", "--data", "elsewhere"])
    assert rc == 2 and capsys.readouterr().err.strip().splitlines()[-1].startswith("fastweights: error: --data:")
