"""The part of a training run that the supervised loop (:mod:`.loop`), the language-model loop (:mod:`.lm`) and
the IMPALA learner (:mod:`fastweights.rl.impala`) share: the start of a run (:func:`start_run`,
:func:`write_run_config`, :func:`seeded_model_and_optimizer`, :func:`distributed`) and the step loop
(:class:`StepLoop`), which calls a :class:`Task` for everything that differs between tasks.

One step of :meth:`StepLoop.run`, in order:

1. ``task.next_batch()`` (the task keeps its data position and rolls over epochs), ``task.forward(batch)``:
   this process's summed loss (:class:`BatchLoss`);
2. one all-reduce tells every process the global count of loss terms, whether a stop signal arrived and
   whether any process's loss is NaN/inf; a NaN/inf loss stops the run (``task.error``, naming the last good
   checkpoint) before the weights change;
3. backward on ``task.scale(loss sum, global count)``, gradient clipping (a NaN/inf norm stops the run
   likewise), the optimizer and scheduler steps, ``task.after_update(loss)``; the step count goes up;
4. the batch's loss and metric sums are added to the running train sums; every ``log_interval`` steps
   (and at the last step) they are summed over processes and written as a train record (with
   ``task.rates`` over the time since the last record, the time spent validating and saving left out);
5. every ``eval_interval`` steps (and at the last step) rank 0 validates (``task.validate()``) and keeps
   the best (``task.beats``), then a checkpoint is saved (``last``, and ``best`` where it improved); at
   other multiples of ``save_interval`` a checkpoint is saved. A task without validation
   (``task.validates = False``, the RL learner) saves at multiples of ``save_interval`` and at the last
   step, and redraws its curves each time;
6. a stop signal (SIGTERM/SIGINT) saves a checkpoint if step 5 did not and ends the run; a spent time budget
   ends it too (its last step was already validated and saved by step 5, being the last step), and so does
   ``task.finished()`` after a validation (e.g. a target accuracy reached: the summary's ``stopped``).

``task.start()`` runs once the signal handlers are in place, before the first step (the RL learner starts
its actor processes), and ``task.close()`` when the run ends, however it ends. The run ends with
``summary.json`` (``status``, ``stopped``: None, ``"time budget"`` or the signal's name).
The last step is ``total`` or the first step past the time budget. Checkpoints hold the weights and
``trainer.pt``: ``optimizer``, ``scheduler``, ``rng`` (per process), ``best``, ``accum`` (the train sums since
the last record), ``world_size``, ``threads``, ``elapsed_s`` (time on the budget's clock) and the task's own
entries (``task.checkpoint_state()``: its data position, the LM's carried state).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import _faults, precision, rundir
from .checkpoint import CheckpointError, recover, save_checkpoint, write_json_atomic
from .common import (Budget, StopSignals, capture_rng, device_for_rank, diverged_message, gather_from_ranks,
                     restore_rng, share_best)
from .config import TrainConfigError
from ..provenance import record_session
from .report import Report
from .runlog import RunLog

CONFIG = "config.json"
SUMMARY = "summary.json"
CKPT = "checkpoints"


# ------------------------------------------------------------------------------------------ the start of a run

def start_run(cfg, resume: bool, dist, rank: int, world: int) -> tuple[Path, torch.device]:
    """``(run directory, this process's device)`` after the checks every loop makes before reading its data:
    the global batch splits evenly across the processes, and rank 0 claims the run directory
    (:func:`.rundir.claim`: creates it, takes its lock, and for a fresh start checks that it is new, empty or
    a failed start's leftovers; ``TrainConfigError`` naming ``out`` otherwise, on every process). Sets torch's
    thread count (``cfg.threads``)."""
    run_dir = Path(cfg.out)
    if cfg.batch_size % world:
        raise TrainConfigError("batch_size", f"batch_size ({cfg.batch_size}) must be divisible by the number of "
                                             f"processes ({world})")
    error = None
    if rank == 0:
        try:
            rundir.claim(run_dir, resume)
        except TrainConfigError as e:
            error = e
    if dist is not None:  # every process learns rank 0's verdict
        verdict = [str(error) if error is not None else None]
        dist.broadcast_object_list(verdict, src=0)
        if verdict[0] is not None and error is None:
            raise TrainConfigError("out", verdict[0])
    if error is not None:
        raise error
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    return run_dir, device_for_rank(rank)


def release_run(run_dir) -> None:
    """Gives up this process's claim on ``run_dir`` (the training functions call it when they end, however they
    end; :meth:`StepLoop.run` does it too). No-op where this process holds none."""
    _pending_config.pop(rundir._key(run_dir), None)
    rundir.release(run_dir)


_pending_config: dict[str, dict] = {}  # run directory -> the config write_run_config was given, until run()


def write_run_config(run_dir: Path, cfg, rank: int, dist) -> None:
    """Rank 0 keeps the resolved config for ``config.json``, which :meth:`StepLoop.run` writes once the start
    succeeded (so a start that fails leaves no ``config.json`` to block a plain retry)."""
    if rank == 0:
        from .runs import config_record

        _pending_config[rundir._key(run_dir)] = config_record(cfg, run_dir)  # its kind, paths relative to the run
    if dist is not None:
        dist.barrier()


def seeded_model_and_optimizer(cfg, rank: int, device):
    """``(model, Adam)``: every RNG seeded with ``cfg.seed`` before the model is built, so every process
    starts from the same weights; processes after rank 0 then reseed torch so their dropout streams differ."""
    from ..models import build_model

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = build_model(cfg.model_config()).to(device)
    if rank > 0:
        torch.manual_seed(cfg.seed * 7919 + rank)
    return model, torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                   weight_decay=cfg.weight_decay)


def distributed(module, dist, device, **ddp_options):
    """``module`` in DistributedDataParallel under ``torchrun`` (unchanged in one process). Wrap after
    loading a checkpoint: DDP starts every process from rank 0's weights."""
    if dist is None:
        return module
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda"
                                                     else None, **ddp_options)


# ------------------------------------------------------------------------------------------ the task's hooks

@dataclass
class BatchLoss:
    """What :meth:`Task.forward` returns for this process's share of a batch."""

    sum: torch.Tensor  # the summed loss (a scalar that backward goes through)
    count: float  # how many terms it sums; the processes' counts add up to the global count
    sums: dict = field(default_factory=dict)  # added to the running train sums (keys of task.zero_accum())
    state: object = None  # anything after_update needs (the LM's final state)


class Task(Report):
    """What differs between training loops, as hooks :class:`StepLoop` calls (see the module doc for when):
    the run (``start``, ``close``), one step (``next_batch``, ``forward``, ``scale``, ``after_update``), the
    train sums (``zero_accum``, ``train_metrics``), validation (``validate``, ``beats``, ``best_record``,
    ``finished``) and the checkpoint (``checkpoint_state``, ``restore``). How the run is shown and summed up is
    :class:`~.report.Report`'s, every hook of which has a default.

    Attributes: ``name`` (the run log's task: its plot and line format), ``error`` (the exception of a
    NaN/inf loss or gradient), ``total`` (the run's steps), ``epoch`` (written in train records; None: not
    written), ``validates`` (False: no validation, see the module doc)."""

    name: str = ""
    error: type = RuntimeError
    total: int = 0
    epoch: int | None = 0
    validates: bool = True

    # -- the run
    def start(self) -> None:
        """Called before the first step, with the stop-signal handlers in place."""

    def close(self) -> None:
        """Called when the run ends (completed, stopped or failed)."""

    # -- one step
    def next_batch(self):
        """The next batch, moving the data position on (a new epoch after the last batch of one)."""
        raise NotImplementedError

    def forward(self, batch) -> BatchLoss:
        """This process's loss on its share of ``batch``."""
        raise NotImplementedError

    def scale(self, loss_sum: torch.Tensor, global_count: float) -> torch.Tensor:
        """The loss to backpropagate. DDP averages gradients over the processes, so ``world_size`` times
        this process's part of the global mean."""
        raise NotImplementedError

    def after_update(self, loss: BatchLoss) -> None:
        """Called after the optimizer step (e.g. to keep the LM's final state for the next segment)."""

    # -- metrics
    def zero_accum(self) -> dict:
        """Empty train sums: ``loss_sum``, ``tokens`` and the keys of ``BatchLoss.sums``; with a
        ``grad_norm_sum`` key the loop adds each step's gradient norm (before clipping) to it."""
        return {"loss_sum": 0.0, "tokens": 0}

    def train_metrics(self, totals: dict) -> dict:
        """The metrics of a train record, from train sums (over every process)."""
        raise NotImplementedError

    def validate(self) -> dict:
        """Rank 0 only: the metrics of a valid record."""
        raise NotImplementedError

    def beats(self, metrics: dict, best: dict) -> bool:
        """Whether validation ``metrics`` are better than the ``best`` record so far."""
        raise NotImplementedError

    def best_record(self, step: int, metrics: dict) -> dict:
        """The record of a new best validation (kept in checkpoints)."""
        raise NotImplementedError

    # -- checkpoints
    def checkpoint_state(self) -> dict:
        """The task's entries of a checkpoint's trainer state. Called on every process (a task may gather
        per-process state); rank 0's result is saved."""
        return {}

    def finished(self) -> str | None:
        """Rank 0, after each validation: why the run should end now (e.g. a target accuracy reached, the
        summary's ``stopped``), or None to go on."""
        return None

    def restore(self, state: dict, ckpt_root: Path) -> None:
        """Takes back what :meth:`checkpoint_state` saved. ``KeyError``/``ValueError``/... become "does not
        fit this run"; raise ``CheckpointError`` for a message of its own."""


# ------------------------------------------------------------------------------------------ the step loop

class StepLoop:
    """Trains ``model`` with ``opt`` and ``sched`` on ``task`` into ``run_dir``: ``resume()`` (optional), then
    ``run()``. ``cfg`` gives ``log_interval``, ``eval_interval``, ``save_interval``, ``grad_clip``,
    ``time_budget_minutes`` and ``budget_clock``. ``model`` is the bare model: the one saved, validated and
    clipped (the task's forward may call a DDP wrapper of it)."""

    def __init__(self, task: Task, cfg, run_dir: Path, model, opt, sched, dist=None, rank: int = 0, world: int = 1,
                 device=None):
        self.task, self.cfg, self.run_dir = task, cfg, Path(run_dir)
        self.model, self.opt, self.sched = model, opt, sched
        self.dist, self.rank, self.world = dist, rank, world
        self.device = device if device is not None else torch.device("cpu")
        self.precision = precision.resolve(getattr(cfg, "precision", "fp32"), self.device)
        self.ckpt_root = self.run_dir / CKPT
        self.step, self.best, self.elapsed_before = 0, None, 0.0
        self.accum = task.zero_accum()  # train sums since the last train record (this process's)
        self.budget = None
        self._idle = False  # a resumed run with its budget already spent: no step, no "done" message
        self.log = None
        self.t_last = 0.0  # when the train sums started (for tokens/s)
        self._notes = []  # what resume() found, said once the run log exists

    def resume(self) -> None:
        """Continues from the ``last`` checkpoint, or if it is missing or damaged from the newest checkpoint that
        validates (saying so); with no checkpoint at all, from step 0 if nothing was trained yet (refused
        otherwise, see :func:`.rundir.no_checkpoint_start`). Restores the weights, optimizer, scheduler, step,
        best, train sums, time spent, this process's RNG and the task's state."""
        found = recover(self.ckpt_root, self.model, map_location=self.device, repoint=self.rank == 0)
        if found is None:
            rundir.no_checkpoint_start(self.run_dir)
            self._notes.append(f"no checkpoint in {self.ckpt_root} and nothing trained yet: starting from step 0")
            return
        _, st, note = found
        if note:
            self._notes.append(note)
        try:
            self.opt.load_state_dict(st["optimizer"])
            self.sched.load_state_dict(st["scheduler"])
            self.step, self.best, self.accum = int(st["step"]), st["best"], dict(st["accum"])
            self.elapsed_before = float(st.get("elapsed_s", 0.0))  # absent in checkpoints older than budgets
            rngs = st["rng"]
            restore_rng(rngs[self.rank] if len(rngs) == self.world else rngs[0])
            self.task.restore(st, self.ckpt_root)
        except CheckpointError:
            raise
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint in {self.ckpt_root} does not fit this run ({e})") from None

    def run(self, progress: bool | None = None) -> dict:
        """Trains up to ``task.total`` steps (or the time budget, or a stop signal); returns the summary,
        also written to ``summary.json``. Raises ``task.error`` on a NaN/inf loss or gradient."""
        task, cfg, total = self.task, self.cfg, self.task.total
        if self.rank == 0:
            pending = _pending_config.pop(rundir._key(self.run_dir), None)
            if pending is not None:  # the start succeeded: now the directory holds a run
                write_json_atomic(self.run_dir / CONFIG, pending)
            record_session(self.run_dir, step=self.step, resumed=self.step > 0, precision=self.precision)
            self.log = RunLog(self.run_dir, task.name, total, self.step, progress, **task.run_log_options())
            for note in self._notes:
                self.log.message(note)
            self.log.message(f"{'resuming at step ' + str(self.step) if self.step else 'starting'}: "
                             f"{task.describe()}, run dir {self.run_dir}")
        try:
            status, t_start = "completed", time.time()
            self.t_last = t_start
            self.budget = Budget(cfg.time_budget_minutes, cfg.budget_clock, self.elapsed_before, self.dist)
            out_of_time = self.step < total and self.budget.spent()  # a resumed run whose budget is already spent
            self._idle = out_of_time
            reached = None  # why the task ended the run (Task.finished), if it did
            if out_of_time:
                self._message(f"time budget of {cfg.time_budget_minutes:g} min already spent "
                              f"({self.elapsed_before / 60:.2f} min at step {self.step}); nothing to do (raise it "
                              f"with --time-budget)")
            with StopSignals() as signals:
                task.start()
                self.t_last = time.time()  # the rates leave the start (e.g. of actor processes) out
                while self.step < total and not out_of_time:
                    # 1. the forward pass
                    batch = task.next_batch()
                    with self.autocast():
                        loss = task.forward(batch)
                    loss_sum = loss.sum
                    if _faults.active("nan-at-step", self.step + 1):
                        loss_sum = loss_sum * float("nan")
                    loss_value = float(loss_sum.detach())
                    # 2. the global count, a stop signal and a NaN/inf loss on any process
                    flags = torch.tensor([float(loss.count), float(signals.received is not None),
                                          float(not math.isfinite(loss_value))], dtype=torch.float64)
                    if self.dist is not None:
                        self.dist.all_reduce(flags)
                    global_count, stop_asked, diverged = float(flags[0]), bool(flags[1] > 0), bool(flags[2] > 0)
                    if diverged:
                        raise task.error(diverged_message(self.step + 1, "loss", loss_value, self.ckpt_root))
                    # 3. the update
                    self.opt.zero_grad(set_to_none=True)
                    task.scale(loss_sum, global_count).backward()
                    gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                           cfg.grad_clip if cfg.grad_clip else float("inf"))
                    if not math.isfinite(float(gnorm)):
                        raise task.error(diverged_message(self.step + 1, "gradient norm", float(gnorm),
                                                          self.ckpt_root))
                    self.opt.step()
                    self.sched.step()
                    task.after_update(loss)
                    self.step += 1
                    # 4. train metrics
                    self.accum["loss_sum"] += loss_value
                    if "grad_norm_sum" in self.accum:
                        self.accum["grad_norm_sum"] += float(gnorm)
                    for k, v in loss.sums.items():
                        self.accum[k] += v
                    out_of_time = self.step < total and self.budget.spent()
                    last = self.step == total or out_of_time
                    if self.log is not None:  # this process's sums are 1/world of all processes' in that time
                        self.log.step(self.step, {**task.progress_metrics(self.accum),
                                                  **task.rates(self.accum, (time.time() - self.t_last) / self.world)})
                    if self.step % cfg.log_interval == 0 or last:
                        self._record_train()
                    # 5. validation and checkpoints (their time is left out of the rates)
                    t_pause = time.time()
                    evaluating = task.validates and (self.step % cfg.eval_interval == 0 or last)
                    reached = None
                    if evaluating:
                        self._validate_and_save()
                        reached = self._finished()
                    elif last or (cfg.save_interval and self.step % cfg.save_interval == 0):
                        self._save(["last"])
                        if self.log is not None and not task.validates:
                            self.log.plot()
                    self.t_last += time.time() - t_pause
                    _faults.maybe_kill("kill-at-step", self.step)
                    # 6. stop signal, time budget
                    # under DDP only the all-reduced flag counts: a signal that reached one process after
                    # this step's all-reduce is acted on at the next step, by every process together
                    if stop_asked or (self.dist is None and signals.received is not None):
                        if not (evaluating or last):
                            self._save(["last"])
                        status = "stopped"
                        self._message(f"stopped by {signals.received or 'a signal'} at step {self.step}: checkpoint "
                                      f"saved in {self.ckpt_root}; continue with --resume")
                        break
                    if out_of_time:
                        self._message(f"time budget of {cfg.time_budget_minutes:g} min spent at step {self.step} "
                                      f"of {total}; continue with --resume and a larger --time-budget")
                    elif reached is not None and not last:
                        if self.step % cfg.log_interval:  # the train sums since the last record
                            self._record_train()
                        self._message(f"{reached} at step {self.step} of {total}: stopping")
                        break
            # why the run ended before its steps: None, "time budget", the signal's name, or task.finished()'s
            stopped = ((signals.received or "a signal") if status == "stopped" else "time budget" if out_of_time
                       else reached if self.step < total else None)
            return self._finish(status, stopped, t_start)
        finally:
            task.close()
            if self.log is not None:
                self.log.close()
                self.log = None
            rundir.release(self.run_dir)

    # -- the pieces of a step
    def _message(self, text: str) -> None:
        if self.log is not None:
            self.log.message(text)

    def _record_train(self) -> None:
        """A train record from the train sums of every process, which then start again from zero."""
        totals = dict(self.accum)
        if self.dist is not None:
            keys = sorted(totals)
            vec = torch.tensor([float(totals[k]) for k in keys], dtype=torch.float64)
            self.dist.all_reduce(vec)
            totals = dict(zip(keys, vec.tolist()))
        now = time.time()
        if self.log is not None:
            epoch = {"epoch": self.task.epoch} if self.task.epoch is not None else {}
            self.log.record({"step": self.step, "split": "train", **self.task.train_metrics(totals),
                             "lr": self.sched.get_last_lr()[0], **epoch, **self.task.rates(totals, now - self.t_last),
                             "train_seconds": round(self.budget.elapsed(), 3)})
        self.accum, self.t_last = self.task.zero_accum(), now

    def autocast(self):
        """The context of the forward passes (training and validation): see :mod:`.precision`."""
        return precision.autocast(self.precision, self.device)

    def _validate_and_save(self) -> None:
        """Rank 0 validates and keeps the best; every process then saves (``best`` too where it improved)."""
        pointers = ["last"]
        if self.rank == 0:
            with self.autocast():
                metrics = self.task.validate()
            self.log.record({"step": self.step, "split": "valid", **metrics,
                             "train_seconds": round(self.budget.elapsed(), 3)})
            self.log.plot()
            if self.best is None or self.task.beats(metrics, self.best):
                self.best = self.task.best_record(self.step, metrics)
                pointers.append("best")
        self.best, pointers = share_best(self.dist, self.best, self.step, pointers)
        self._save(pointers)

    def _finished(self) -> str | None:
        """Rank 0's :meth:`Task.finished`, on every process."""
        reason = [self.task.finished() if self.rank == 0 else None]
        if reason[0] is None and self.best is not None and hasattr(self.cfg, "plateau_reason"):  # --stop-plateau
            reason[0] = self.cfg.plateau_reason(self.step, self.best["step"])
        if self.dist is not None:
            self.dist.broadcast_object_list(reason, src=0)
        return reason[0]

    def _save(self, pointers: list) -> None:
        """A checkpoint of this step (every process takes part; rank 0 writes it)."""
        rngs = gather_from_ranks(self.dist, self.world, capture_rng())
        task_state = self.task.checkpoint_state()
        if self.rank == 0:
            state = {**task_state, "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                     "rng": rngs, "best": self.best, "accum": self.accum, "world_size": self.world,
                     "threads": torch.get_num_threads(), "elapsed_s": self.budget.elapsed()}
            save_checkpoint(self.ckpt_root, self.model, state, self.step, pointers)
        if self.dist is not None:
            self.dist.barrier()

    def _finish(self, status: str, stopped, t_start: float) -> dict:
        """The summary (written by rank 0 to ``summary.json``) and the final message of a completed run."""
        best, train_s = self.best, self.budget.elapsed()
        summary = {"status": status, "stopped": stopped, "step": self.step, "total_steps": self.task.total,
                   "world_size": self.world, "best_step": best["step"] if best else None,
                   "best_valid": self.task.best_valid(best) if best else None,
                   "seconds_this_session": round(time.time() - t_start, 2), "train_seconds": round(train_s, 2),
                   "budget_clock": self.cfg.budget_clock, "time_budget_minutes": self.cfg.time_budget_minutes}
        summary = self.task.summary(summary, train_s)
        if self.rank == 0:
            write_json_atomic(self.run_dir / SUMMARY, summary)
            if status == "completed" and not self._idle:
                self._message(f"done: {self.step} steps{self.task.describe_end(summary, best)}; run dir "
                              f"{self.run_dir}")
        return summary
