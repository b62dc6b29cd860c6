"""The step loop shared by the supervised and language-model loops (``fastweights.train.driver``), driven by a
toy task (a linear regression with a random loss mask, so resume must restore the RNG and the data position):
the order of events in a step, when records, validations and checkpoints happen, the best checkpoint, exact
resume after a stop signal, the NaN stop and the time budget. Runs in this process in a few seconds."""

from __future__ import annotations

import json
import os
import signal
from types import SimpleNamespace

import pytest
import torch

from fastweights.train.checkpoint import load_checkpoint
from fastweights.train.driver import BatchLoss, StepLoop, Task

from .helpers import read_records, strip_timing

pytestmark = pytest.mark.filterwarnings("ignore:No artists with labels")  # the toy's records have no accuracy


class ToyError(RuntimeError):
    pass


class Toy(Task):
    """Batches of 4 of 12 fixed examples (3 per epoch); validation losses from a script."""

    name = "toy"
    error = ToyError

    def __init__(self, model, total, valid_losses=(), signal_at=None):
        self.model, self.total, self.valid_losses, self.signal_at = model, total, list(valid_losses), signal_at
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(12, 3, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5]])
        self.epoch, self.pos, self.events, self.validations = 0, 0, [], 0

    def next_batch(self):
        if self.pos == 3:
            self.epoch, self.pos = self.epoch + 1, 0
        self.events.append("next_batch")
        return self.x[self.pos * 4:self.pos * 4 + 4], self.y[self.pos * 4:self.pos * 4 + 4]

    def forward(self, batch):
        self.events.append("forward")
        if self.signal_at is not None and len([e for e in self.events if e == "forward"]) == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)  # the driver turns it into "save and stop after this step"
        x, y = batch
        mask = (torch.rand(len(x), 1) > 0.3).float()
        return BatchLoss((((self.model(x) - y) ** 2) * mask).sum(), len(x), {"tokens": len(x)})

    def scale(self, loss_sum, global_count):
        self.events.append("scale")
        return loss_sum / global_count

    def after_update(self, loss):
        self.events.append("after_update")
        self.pos += 1

    def train_metrics(self, totals):
        return {"loss": totals["loss_sum"] / max(totals["tokens"], 1)}

    def validate(self):
        self.events.append("validate")
        self.validations += 1
        return {"loss": self.valid_losses.pop(0) if self.valid_losses else 9.0}

    def beats(self, metrics, best):
        return metrics["loss"] < best["loss"]

    def best_record(self, step, metrics):
        return {"step": step, "loss": metrics["loss"]}

    def checkpoint_state(self):
        self.events.append("save")
        return {"epoch": self.epoch, "pos": self.pos}

    def restore(self, state, ckpt_root):
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])

    def describe(self):
        return "a toy"

    def describe_best(self, best):
        return f"loss {best['loss']}"


def make_loop(run_dir, total, seed=0, **kw):
    cfg = SimpleNamespace(log_interval=kw.pop("log_interval", 2), eval_interval=kw.pop("eval_interval", 3),
                          save_interval=kw.pop("save_interval", 2), grad_clip=1.0,
                          time_budget_minutes=kw.pop("time_budget_minutes", None),
                          budget_clock=kw.pop("budget_clock", "wall"))
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    run_dir.mkdir(parents=True, exist_ok=True)
    task = Toy(model, total, **kw)
    return StepLoop(task, cfg, run_dir, model, opt, sched), task, model


def pointer(run_dir, which="last"):
    return json.loads((run_dir / "checkpoints" / f"{which}.json").read_text())["step"]


def test_order_of_events_records_checkpoints_best_and_summary(tmp_path):
    loop, task, _ = make_loop(tmp_path / "r", total=7, valid_losses=[3.0, 1.0, 2.0])
    summary = loop.run(progress=False)
    step = ["next_batch", "forward", "scale", "after_update"]
    # save_interval 2, eval_interval 3: saves at 2 and 4, validation then a save at 3, 6 and the last step, 7
    assert task.events == (step * 2 + ["save"] + step + ["validate", "save"] + step + ["save"] + step
                           + step + ["validate", "save"] + step + ["validate", "save"])
    assert [(r["step"], r["split"]) for r in read_records(tmp_path / "r")] == [
        (2, "train"), (3, "valid"), (4, "train"), (6, "train"), (6, "valid"), (7, "train"), (7, "valid")]
    train = read_records(tmp_path / "r", "train")
    assert [r["epoch"] for r in train] == [0, 1, 1, 2] and all(r["loss"] > 0 for r in train)
    assert pointer(tmp_path / "r") == 7 and pointer(tmp_path / "r", "best") == 6
    assert summary["status"] == "completed" and summary["stopped"] is None and summary["step"] == 7
    assert summary["best_step"] == 6 and summary["best_valid"] == {"step": 6, "loss": 1.0}
    assert json.loads((tmp_path / "r" / "summary.json").read_text()) == summary
    state = load_checkpoint(tmp_path / "r" / "checkpoints")[1]
    assert (state["epoch"], state["pos"], state["best"]["step"], state["accum"]) == (2, 1, 6, {"loss_sum": 0.0,
                                                                                               "tokens": 0})


def test_resume_after_a_stop_signal_is_bitwise(tmp_path):
    ref, _, ref_model = make_loop(tmp_path / "ref", total=8, log_interval=1, save_interval=None)
    ref.run(progress=False)
    stopped, task, _ = make_loop(tmp_path / "run", total=8, log_interval=1, save_interval=None, signal_at=5)
    summary = stopped.run(progress=False)
    assert summary["status"] == "stopped" and summary["stopped"] == "SIGTERM" and summary["step"] == 5
    assert pointer(tmp_path / "run") == 5 and task.validations == 1  # saved at the signal, not validated
    resumed, task, model = make_loop(tmp_path / "run", total=8, log_interval=1, save_interval=None, seed=1)
    resumed.resume()
    assert (resumed.step, task.epoch, task.pos) == (5, 1, 2)
    assert resumed.run(progress=False)["status"] == "completed"
    assert strip_timing(read_records(tmp_path / "run")) == strip_timing(read_records(tmp_path / "ref"))
    assert torch.equal(model.weight, ref_model.weight) and torch.equal(model.bias, ref_model.bias)


def test_nan_loss_raises_the_task_error_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTWEIGHTS_FAULT", "nan-at-step:5")
    loop, task, _ = make_loop(tmp_path / "r", total=8, save_interval=None)
    with pytest.raises(ToyError, match=r"loss is nan at step 5; .*\(step 3\)"):
        loop.run(progress=False)
    assert pointer(tmp_path / "r") == 3 and loop.step == 4 and "after_update" not in task.events[-2:]


def test_time_budget_ends_with_a_validated_checkpoint_and_stays_spent(tmp_path, monkeypatch):
    """A fake CPU clock that advances 1 s per reading: a 2.5 s budget is spent at the check after step 2."""
    import time

    readings = iter(range(10**6))
    monkeypatch.setattr(time, "process_time", lambda: float(next(readings)))
    loop, _, _ = make_loop(tmp_path / "r", total=100, time_budget_minutes=2.5 / 60, budget_clock="cpu")
    summary = loop.run(progress=False)
    assert summary["stopped"] == "time budget" and summary["status"] == "completed" and summary["step"] == 2
    assert [(r["step"], r["split"]) for r in read_records(tmp_path / "r")] == [(2, "train"), (2, "valid")]
    assert pointer(tmp_path / "r") == pointer(tmp_path / "r", "best") == 2
    again, task, _ = make_loop(tmp_path / "r", total=100, time_budget_minutes=2.5 / 60, budget_clock="cpu")
    again.resume()
    summary = again.run(progress=False)
    assert summary["stopped"] == "time budget" and summary["step"] == 2 and task.events == []
    saved = load_checkpoint(tmp_path / "r" / "checkpoints")[1]["elapsed_s"]
    assert saved >= 3 and summary["train_seconds"] > saved  # the earlier session's time counts
