"""The supervised training loop, its resumption, and evaluation of a finished run.

``train(cfg, resume=False)`` runs one :class:`TrainConfig` into ``cfg.out`` (see :mod:`.checkpoint` and
:mod:`.runlog` for what it writes); ``evaluate_run(run_dir)`` scores the best-validation checkpoint on
the test split. Under ``torchrun`` (``WORLD_SIZE`` > 1) the same call trains with DistributedDataParallel
(gloo on CPU, NCCL on GPU); the global batch is split across processes and the loss is normalised by
the global count, so N processes take the same steps as one (up to float summation order).

Exactness of ``--resume``: the data order depends only on ``(seed, epoch)`` and the checkpoint stores the
position within the epoch, every RNG (torch, Python, NumPy, per process), the optimizer and scheduler,
and the partial train-metric sums; so on CPU with the same thread count a resumed run's losses equal an
uninterrupted run's bit for bit.

Time budget (``TrainConfig.time_budget_minutes``): the checkpoint also stores the training loop's elapsed
time on the budget's clock (wall, or process CPU with ``budget_clock="cpu"``; :class:`.common.Budget`), so
a resumed run goes on spending the same budget; the run ends after the first step past it (final evaluation,
checkpoint, ``"stopped": "time budget"`` in the summary). The clock does not affect the weights, so resume
stays exact (only where a budgeted run stops depends on the machine's speed).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from . import _faults
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_json_atomic
from .common import (Budget, StopSignals, capture_rng, config_changes, device_for_rank, diverged_message,
                     gather_from_ranks, init_distributed, read_run_config, restore_rng, share_best)
from .config import TrainConfig, TrainConfigError
from .data import (COUNT_KEYS, MAIN_METRIC, EncodedSplit, ResumableBatchSampler, eval_batches, make_loader,
                   objective, summarize)

CONFIG = "config.json"
SUMMARY = "summary.json"
DATA = "data"
CKPT = "checkpoints"
RESUMABLE_OVERRIDES = ("steps", "epochs", "eval_interval", "save_interval", "log_interval", "time_budget_minutes")


class TrainError(RuntimeError):
    """The run cannot go on (a NaN/inf loss or gradient): the message says why and what was kept."""


# ------------------------------------------------------------------------------------------ config

def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    return TrainConfig.from_dict(read_run_config(run_dir, CONFIG))


def resume_config(run_dir: str | os.PathLike, overrides: dict) -> TrainConfig:
    """The saved config of ``run_dir`` with ``overrides`` applied. Only the length, the intervals and the
    time budget may change on resume; any other override that differs from the saved value raises
    ``TrainConfigError``."""
    saved = load_run_config(run_dir)
    changes = config_changes(saved, overrides, RESUMABLE_OVERRIDES, TrainConfigError)
    if "steps" in changes:
        changes.setdefault("epochs", None)
    if "epochs" in changes:
        changes.setdefault("steps", None)
    return dataclasses.replace(saved, **changes) if changes else saved


# ------------------------------------------------------------------------------------------ helpers

def load_data(cfg: TrainConfig, run_dir: Path, write: bool):
    """The run's splits: ``RUN_DIR/data`` if it exists, else read from ``cfg.data_dir`` or generated; on
    the first start they are written to ``RUN_DIR/data``, so resume and eval read exactly what training
    saw (wherever they run from)."""
    from ..tasks import load_splits, make_splits, write_splits

    local = run_dir / DATA
    if (local / "meta.json").exists():
        splits = load_splits(local)
    elif cfg.data_dir is not None:
        splits = load_splits(cfg.data_dir)
    else:
        splits = None
    if splits is not None:
        if splits.meta.get("task") != cfg.task:
            raise TrainConfigError("data_dir", f"data_dir {cfg.data_dir or local} holds {splits.meta.get('task')!r} "
                                               f"data, not {cfg.task!r}")
        if write and not (local / "meta.json").exists():
            write_splits(local, splits)
        return splits
    splits = make_splits(cfg.task, sizes=cfg.sizes, seed=cfg.data_seed, progress=False, **cfg.task_options())
    if write:
        write_splits(local, splits)
    return splits


def _config_from_data(cfg: TrainConfig, meta: dict) -> TrainConfig:
    """Records the options and sizes of a ``--data`` directory in the resolved config."""
    opts, sizes = meta.get("options", {}), meta.get("sizes", {})
    keep = {k: v for k, v in opts.items() if k in ("num_vars", "length", "depth", "ops")}
    try:
        keep["sizes"] = [int(sizes["train"]), int(sizes["valid"]), int(sizes["test"])]
        keep["data_seed"] = int(meta.get("seed", cfg.data_seed))
    except (KeyError, TypeError, ValueError):
        pass
    try:
        return dataclasses.replace(cfg, **keep)
    except ValueError:
        return cfg


@torch.no_grad()
def evaluate(model, dataset: EncodedSplit, batch_size: int, device, loss_positions: str = "prints") -> dict:
    """Loss and accuracies of ``model`` on a whole split (eval mode, restored after)."""
    was = model.training
    model.eval()
    totals = {"loss_sum": 0.0, **{k: 0 for k in COUNT_KEYS[dataset.task]}}
    try:
        for batch in eval_batches(dataset, batch_size):
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = _forward(model, dataset.task, batch)
            obj = objective(dataset.task, logits, batch, loss_positions)
            totals["loss_sum"] += float(obj["loss_sum"])
            for k in COUNT_KEYS[dataset.task]:
                totals[k] += obj[k]
    finally:
        model.train(was)
    return summarize(dataset.task, totals)


def _forward(model, task: str, batch: dict) -> torch.Tensor:
    if task == "listops":
        out, _ = model(batch["inputs"], lengths=batch["lengths"])
    else:
        out, _ = model(batch["inputs"])
    return out


def _score(task: str, metrics: dict) -> list:
    """Higher is better: the main accuracy, then the lower loss."""
    return [metrics[MAIN_METRIC[task]], -metrics["loss"]]


# ------------------------------------------------------------------------------------------ training

def train(cfg: TrainConfig, resume: bool = False, progress: bool | None = None) -> dict:
    """Runs ``cfg`` into ``cfg.out``; with ``resume`` continues from its last checkpoint (a fresh start
    if it has none). Returns the summary (also written to ``RUN_DIR/summary.json``).

    Raises ``ValueError`` (bad run directory, data, checkpoint) and :class:`TrainError` (divergence)."""
    dist, rank, world = init_distributed()
    try:
        return _train(cfg, resume, progress, dist, rank, world)
    finally:
        if dist is not None and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg, resume, progress, dist, rank, world) -> dict:
    from ..models import build_model

    run_dir = Path(cfg.out)
    if cfg.batch_size % world:
        raise TrainConfigError("batch_size", f"batch_size ({cfg.batch_size}) must be divisible by the number "
                                             f"of processes ({world})")
    if not resume and (run_dir / CONFIG).exists():
        raise TrainConfigError("out", f"out {run_dir} already holds a run; resume it or choose another directory")
    if dist is not None:
        dist.barrier()  # every rank has checked the run directory before rank 0 writes into it
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = device_for_rank(rank)
    if rank == 0:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrainConfigError("out", f"out: cannot create {run_dir}: {e.strerror or e}") from None
    splits = load_data(cfg, run_dir, write=rank == 0)
    if cfg.data_dir is not None:
        cfg = _config_from_data(cfg, splits.meta)
    if rank == 0:
        write_json_atomic(run_dir / CONFIG, cfg.to_dict())
    if dist is not None:
        dist.barrier()
    train_set, valid_set = EncodedSplit(cfg.task, splits.train), EncodedSplit(cfg.task, splits.valid)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = build_model(cfg.model_config()).to(device)
    if rank > 0:  # every process starts from rank 0's weights; dropout streams differ per process
        torch.manual_seed(cfg.seed * 7919 + rank)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    warm = cfg.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    sampler = ResumableBatchSampler(len(train_set), cfg.batch_size, cfg.seed, rank, world)
    total = cfg.steps if cfg.steps is not None else cfg.epochs * sampler.batches_per_epoch

    ckpt_root = run_dir / CKPT
    step, epoch, batch_in_epoch, best, elapsed_before = 0, 0, 0, None, 0.0
    accum = _zero_accum(cfg.task)
    if resume:
        loaded = load_checkpoint(ckpt_root, model, "last", map_location=device)
        if loaded is not None:
            _, st = loaded
            try:
                opt.load_state_dict(st["optimizer"])
                sched.load_state_dict(st["scheduler"])
                step, epoch, batch_in_epoch = int(st["step"]), int(st["epoch"]), int(st["batch"])
                best, accum = st["best"], dict(st["accum"])
                elapsed_before = float(st.get("elapsed_s", 0.0))  # absent in checkpoints older than budgets
                rngs = st["rng"]
                restore_rng(rngs[rank] if len(rngs) == world else rngs[0])
            except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
                raise CheckpointError(f"checkpoint in {ckpt_root} does not fit this run ({e})") from None
            sampler_n = sampler.batches_per_epoch
            if batch_in_epoch > sampler_n:
                raise CheckpointError(f"checkpoint in {ckpt_root}: data position {batch_in_epoch} is past the "
                                      f"epoch's {sampler_n} batches")
    for g in opt.param_groups:  # a resumed run keeps its configured rate schedule
        g.setdefault("initial_lr", cfg.lr)

    ddp_model = model
    if dist is not None:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index]
                                                              if device.type == "cuda" else None)
    log = None
    if rank == 0:
        log = _open_log(run_dir, cfg.task, total, step, progress)
        log.message(f"{'resuming at step ' + str(step) if step else 'starting'}: {cfg.task} "
                    f"{cfg.task_options()}, model {cfg.model} ({sum(p.numel() for p in model.parameters()):,} "
                    f"parameters), {total} steps of batch {cfg.batch_size}"
                    f"{f' on {world} processes' if world > 1 else ''}"
                    f"{f' within {cfg.time_budget_minutes:g} min' if cfg.time_budget_minutes else ''}"
                    f", run dir {run_dir}")
    loader = make_loader(train_set, sampler)
    status, t_last, t_start = "completed", time.time(), time.time()
    budget = Budget(cfg.time_budget_minutes, cfg.budget_clock, elapsed_before, dist)
    elapsed, over_budget = budget.elapsed, budget.spent

    out_of_time = step < total and over_budget()  # a resumed run whose budget is already spent
    if out_of_time and log is not None:
        log.message(f"time budget of {cfg.time_budget_minutes:g} min already spent ({elapsed_before / 60:.2f} min "
                    f"at step {step}); nothing to do (raise it with --time-budget)")

    def save(pointers):
        rngs = gather_from_ranks(dist, world, capture_rng())
        if rank == 0:
            state = {"epoch": epoch, "batch": batch_in_epoch, "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "rng": rngs, "best": best, "accum": accum,
                     "world_size": world, "threads": torch.get_num_threads(), "elapsed_s": elapsed()}
            save_checkpoint(ckpt_root, model, state, step, pointers)
        if dist is not None:
            dist.barrier()

    try:
        with StopSignals() as signals:
            while step < total and status == "completed" and not out_of_time:
                sampler.set_position(epoch, batch_in_epoch)
                for batch in loader:
                    batch = {k: v.to(device) for k, v in batch.items()}
                    logits = _forward(ddp_model, cfg.task, batch)
                    obj = objective(cfg.task, logits, batch, cfg.loss_positions)
                    loss_sum = obj["loss_sum"]
                    if _faults.active("nan-at-step", step + 1):
                        loss_sum = loss_sum * float("nan")
                    loss_value = float(loss_sum.detach())
                    flags = torch.tensor([float(obj["loss_count"]), float(signals.received is not None),
                                          float(not math.isfinite(loss_value))], dtype=torch.float64)
                    if dist is not None:
                        dist.all_reduce(flags)
                    if flags[2] > 0:
                        raise TrainError(diverged_message(step + 1, "loss", loss_value, ckpt_root))
                    loss = loss_sum * (world / max(float(flags[0]), 1.0))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                           cfg.grad_clip if cfg.grad_clip else float("inf"))
                    if not math.isfinite(float(gnorm)):
                        raise TrainError(diverged_message(step + 1, "gradient norm", float(gnorm), ckpt_root))
                    opt.step()
                    sched.step()
                    step += 1
                    batch_in_epoch += 1
                    accum["loss_sum"] += loss_value
                    for k in COUNT_KEYS[cfg.task]:
                        accum[k] += obj[k]
                    accum["tokens"] += int(batch["lengths"].sum())
                    accum["steps"] += 1
                    out_of_time = step < total and over_budget()
                    last = step == total or out_of_time
                    if log is not None:
                        log.step(step, {**summarize(cfg.task, accum),
                                        "tokens_per_s": accum["tokens"] * world / max(time.time() - t_last, 1e-9)})
                    if step % cfg.log_interval == 0 or last:
                        totals = dict(accum)
                        if dist is not None:
                            keys = sorted(totals)
                            vec = torch.tensor([float(totals[k]) for k in keys], dtype=torch.float64)
                            dist.all_reduce(vec)
                            totals = dict(zip(keys, vec.tolist()))
                        now = time.time()
                        if log is not None:
                            log.record({"step": step, "split": "train", **summarize(cfg.task, totals),
                                        "lr": sched.get_last_lr()[0], "epoch": epoch,
                                        "tokens_per_s": totals["tokens"] / max(now - t_last, 1e-9),
                                        "train_seconds": round(elapsed(), 3)})
                        accum, t_last = _zero_accum(cfg.task), now
                    evaluating = step % cfg.eval_interval == 0 or last
                    if evaluating:
                        pointers = ["last"]
                        if rank == 0:
                            metrics = evaluate(model, valid_set, cfg.eval_batch_size, device, cfg.loss_positions)
                            log.record({"step": step, "split": "valid", **metrics,
                                        "train_seconds": round(elapsed(), 3)})
                            log.plot()
                            score = _score(cfg.task, metrics)
                            if best is None or score > best["score"]:
                                best = {"step": step, "score": score, "metrics": metrics}
                                pointers.append("best")
                        best, pointers = share_best(dist, best, step, pointers)
                        save(pointers)
                        t_last = time.time()
                    elif cfg.save_interval and step % cfg.save_interval == 0:
                        save(["last"])
                        t_last = time.time()
                    _faults.maybe_kill("kill-at-step", step)
                    if flags[1] > 0 or signals.received is not None:
                        if not evaluating:
                            save(["last"])
                        status = "stopped"
                        if log is not None:
                            log.message(f"stopped by {signals.received or 'a signal'} at step {step}: checkpoint "
                                        f"saved in {ckpt_root}; continue with --resume")
                        break
                    if out_of_time:
                        if log is not None:
                            log.message(f"time budget of {cfg.time_budget_minutes:g} min spent at step {step} "
                                        f"of {total}; continue with --resume and a larger --time-budget")
                        break
                    if step >= total:
                        break
                if batch_in_epoch >= sampler.batches_per_epoch:
                    epoch += 1
                    batch_in_epoch = 0
        # why the run ended before its steps/epochs: None, "time budget", or the signal's name
        stopped = (signals.received or "a signal") if status == "stopped" else "time budget" if out_of_time else None
        summary = {"status": status, "stopped": stopped, "step": step, "total_steps": total, "world_size": world,
                   "best_step": best["step"] if best else None, "best_valid": best["metrics"] if best else None,
                   "seconds_this_session": round(time.time() - t_start, 2),
                   "train_seconds": round(elapsed(), 2), "budget_clock": cfg.budget_clock,
                   "time_budget_minutes": cfg.time_budget_minutes}
        if rank == 0:
            write_json_atomic(run_dir / SUMMARY, summary)
            if status == "completed" and best:
                log.message(f"done: {step} steps; best valid {_fmt(cfg.task, best['metrics'])} at step "
                            f"{best['step']}; run dir {run_dir}")
        return summary
    finally:
        if log is not None:
            log.close()


def _open_log(*args, **kwargs):
    from .runlog import RunLog

    return RunLog(*args, **kwargs)


def _zero_accum(task: str) -> dict:
    return {"loss_sum": 0.0, "tokens": 0, "steps": 0, **{k: 0 for k in COUNT_KEYS[task]}}


def _fmt(task: str, m: dict) -> str:
    if task == "code-exec":
        return f"print acc {100 * m['print_acc']:.2f}%, seq acc {100 * m['seq_acc']:.2f}%, loss {m['loss']:.4f}"
    return f"acc {100 * m['acc']:.2f}%, loss {m['loss']:.4f}"


# ------------------------------------------------------------------------------------------ evaluation

def evaluate_run(run_dir: str | os.PathLike, split: str = "test", which: str = "best") -> dict:
    """Metrics of a run's ``which`` checkpoint (``"best"`` validation, or ``"last"``) on ``split``."""
    from ..models import build_model

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be train, valid or test, got {split!r}")
    model = build_model(cfg.model_config())
    loaded = load_checkpoint(run_dir / CKPT, model, which)
    if loaded is None:
        raise CheckpointError(f"{run_dir}: no {which} checkpoint yet (no {CKPT}/{which}.json)")
    ptr, _ = loaded
    splits = load_data(cfg, run_dir, write=False)
    data = EncodedSplit(cfg.task, splits[split])
    metrics = evaluate(model, data, cfg.eval_batch_size, torch.device("cpu"), cfg.loss_positions)
    return {"run_dir": str(run_dir), "task": cfg.task, "model": cfg.model, "options": cfg.task_options(),
            "split": split, "checkpoint": which, "step": ptr["step"], "examples": len(data), **metrics}
