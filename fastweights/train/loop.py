"""The supervised training loop, its resumption, and evaluation of a finished run.

``train(cfg, resume=False)`` runs one :class:`TrainConfig` into ``cfg.out`` (see :mod:`.checkpoint` and
:mod:`.runlog` for what it writes; the steps, checkpoints, NaN stop, SIGTERM and time budget are those of
:class:`.driver.StepLoop`, given this module's :class:`_SupervisedTask` for the data and the objective);
``evaluate_run(run_dir)`` scores the best-validation checkpoint on the test split. Under ``torchrun``
(``WORLD_SIZE`` > 1) the same call trains with DistributedDataParallel (gloo on CPU, NCCL on GPU); the
global batch is split across processes and the loss is normalised by the global count, so N processes
take the same steps as one (up to float summation order).

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

import os
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_checkpoint
from .common import init_distributed
from .config import TrainConfig, TrainConfigError
from .data import (COUNT_KEYS, MAIN_METRIC, EncodedSplit, ResumableBatchSampler, eval_batches, loss_mask,
                   make_loader, objective, summarize)
from .driver import (CKPT, BatchLoss, StepLoop, Task, distributed, release_run,
                     seeded_model_and_optimizer,
                     start_run, write_run_config)

from .runs import RunError, resume_config  # noqa: F401  (resume_config: the package's public name)

DATA = "data"
EVALS = "evals.json"  # kept evaluation results (see evaluate_run)
TrainError = RunError


def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    from .runs import load_config

    return load_config(run_dir, expect="supervised")


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
    stated = meta.get("listops_depth") if isinstance(meta.get("listops_depth"), dict) else {}
    if "depth" in keep:  # ListOps: the depth as the directory was asked for (no record: nesting, as before)
        keep.update(depth=stated.get("depth", keep["depth"]), depth_convention=stated.get("depth_convention", "nesting"))
    try:
        keep["sizes"] = [int(sizes["train"]), int(sizes["valid"]), int(sizes["test"])]
        keep["data_seed"] = int(meta.get("seed", cfg.data_seed))
    except (KeyError, TypeError, ValueError):
        pass
    try:
        return cfg.replace(**keep)
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
            logits = _forward(model, dataset.task, batch, loss_positions)
            obj = objective(dataset.task, logits, batch, loss_positions)
            totals["loss_sum"] += float(obj["loss_sum"])
            for k in COUNT_KEYS[dataset.task]:
                totals[k] += obj[k]
    finally:
        model.train(was)
    return summarize(dataset.task, totals)


def _forward(model, task: str, batch: dict, loss_positions: str = "prints") -> torch.Tensor:
    if task == "listops":
        out, _ = model(batch["inputs"], lengths=batch["lengths"])
    else:  # only the positions the objective reads: [N, C] logits (see data.objective)
        out, _ = model(batch["inputs"], keep=loss_mask(batch, loss_positions))
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
        release_run(cfg.out)
        if dist is not None and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg, resume, progress, dist, rank, world) -> dict:
    run_dir, device = start_run(cfg, resume, dist, rank, world)
    splits = load_data(cfg, run_dir, write=rank == 0)
    if cfg.data_dir is not None:
        cfg = _config_from_data(cfg, splits.meta)
    write_run_config(run_dir, cfg, rank, dist)
    train_set, valid_set = EncodedSplit(cfg.task, splits.train), EncodedSplit(cfg.task, splits.valid)

    model, opt = seeded_model_and_optimizer(cfg, rank, device)
    warm = cfg.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    task = _SupervisedTask(cfg, model, train_set, valid_set, device, rank, world)
    loop = StepLoop(task, cfg, run_dir, model, opt, sched, dist, rank, world, device)
    if resume:
        loop.resume()
    task.net = distributed(task.net, dist, device)
    return loop.run(progress)


class _SupervisedTask(Task):
    """The algorithmic tasks' hooks for :class:`.driver.StepLoop`: batches of the seeded resumable sampler
    from the position ``(epoch, batch)``, the task objective normalised by the global count of loss terms,
    validation on the whole valid split, best by the main accuracy, then the lower loss."""

    error = TrainError

    def __init__(self, cfg: TrainConfig, model, train_set: EncodedSplit, valid_set: EncodedSplit, device,
                 rank: int, world: int):
        self.cfg, self.model, self.valid_set, self.device, self.world = cfg, model, valid_set, device, world
        self.name = cfg.task
        self.net = model  # what the forward pass calls: the model, or its DDP wrapper
        self.sampler = ResumableBatchSampler(len(train_set), cfg.batch_size, cfg.seed, rank, world,
                                             lengths=[len(x) for x in train_set.ids], pool=cfg.bucket_batches)
        self.loader = make_loader(train_set, self.sampler)
        self.total = cfg.steps if cfg.steps is not None else cfg.epochs * self.sampler.batches_per_epoch
        self.epoch, self.batch = 0, 0  # the data position: the next batch is batch `batch` of epoch `epoch`
        self._batches = None  # the loader's iterator over the rest of the epoch

    def next_batch(self):
        while True:
            if self._batches is None:
                self.sampler.set_position(self.epoch, self.batch)
                self._batches = iter(self.loader)
            batch = next(self._batches, None)
            if batch is not None:
                return {k: v.to(self.device) for k, v in batch.items()}
            self._batches, self.epoch, self.batch = None, self.epoch + 1, 0

    def forward(self, batch) -> BatchLoss:
        obj = objective(self.cfg.task, _forward(self.net, self.cfg.task, batch, self.cfg.loss_positions), batch,
                        self.cfg.loss_positions)
        sums = {**{k: obj[k] for k in COUNT_KEYS[self.cfg.task]}, "tokens": int(batch["lengths"].sum()), "steps": 1}
        return BatchLoss(obj["loss_sum"], obj["loss_count"], sums)

    def scale(self, loss_sum, global_count):
        return loss_sum * (self.world / max(global_count, 1.0))

    def after_update(self, loss: BatchLoss) -> None:
        self.batch += 1

    def zero_accum(self) -> dict:
        return _zero_accum(self.cfg.task)

    def train_metrics(self, totals: dict) -> dict:
        return summarize(self.cfg.task, totals)

    def validate(self) -> dict:
        return evaluate(self.model, self.valid_set, self.cfg.eval_batch_size, self.device, self.cfg.loss_positions)

    def beats(self, metrics: dict, best: dict) -> bool:
        return _score(self.cfg.task, metrics) > best["score"]

    def best_record(self, step: int, metrics: dict) -> dict:
        return {"step": step, "score": _score(self.cfg.task, metrics), "metrics": metrics}

    def checkpoint_state(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def restore(self, state: dict, ckpt_root: Path) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        if self.batch > self.sampler.batches_per_epoch:
            raise CheckpointError(f"checkpoint in {ckpt_root}: data position {self.batch} is past the epoch's "
                                  f"{self.sampler.batches_per_epoch} batches")

    def describe(self) -> str:
        cfg, params = self.cfg, sum(p.numel() for p in self.model.parameters())
        return (f"{cfg.task} {cfg.task_options()}, model {cfg.model} ({params:,} parameters), {self.total} steps of "
                f"batch {cfg.batch_size}"
                f"{f' on {self.world} processes' if self.world > 1 else ''}"
                f"{f' within {cfg.time_budget_minutes:g} min' if cfg.time_budget_minutes else ''}")

    def describe_best(self, best: dict) -> str:
        return _fmt(self.cfg.task, best["metrics"])

    def best_valid(self, best: dict):
        return best["metrics"]


def _zero_accum(task: str) -> dict:
    return {"loss_sum": 0.0, "tokens": 0, "steps": 0, **{k: 0 for k in COUNT_KEYS[task]}}


def _fmt(task: str, m: dict) -> str:
    if task == "code-exec":
        return f"print acc {100 * m['print_acc']:.2f}%, seq acc {100 * m['seq_acc']:.2f}%, loss {m['loss']:.4f}"
    return f"acc {100 * m['acc']:.2f}%, loss {m['loss']:.4f}"


# ------------------------------------------------------------------------------------------ evaluation

def evaluate_run(run_dir: str | os.PathLike, split: str = "test", which: str = "best", cache: bool = False) -> dict:
    """Metrics of a run's ``which`` checkpoint (``"best"`` validation, or ``"last"``) on ``split``.

    Every result is kept in ``RUN_DIR/evals.json`` under the split and the checkpoint's directory (one per
    step, never rewritten); with ``cache`` a kept result of the same checkpoint and the same code (its source
    hash) is returned without evaluating again (``fastweights compare --test`` uses this)."""
    cfg = load_run_config(run_dir)

    def score(model, ptr) -> dict:
        data = EncodedSplit(cfg.task, load_data(cfg, Path(run_dir), write=False)[split])
        metrics = evaluate(model, data, cfg.eval_batch_size, torch.device("cpu"), cfg.loss_positions)
        return {"run_dir": str(run_dir), "task": cfg.task, "model": cfg.model, "options": cfg.task_options(),
                "split": split, "checkpoint": which, "step": ptr["step"], "examples": len(data), **metrics}

    return kept_evaluation(run_dir, cfg, split, which, cache, score)


def kept_evaluation(run_dir, cfg, split: str, which: str, cache: bool, score) -> dict:
    """The evaluation of a run's ``which`` checkpoint on ``split`` that every algorithmic kind shares: a result
    kept in ``evals.json`` by the same code is reused (with ``cache``), else the model is built from ``cfg``,
    the checkpoint loaded (checksums checked) and ``score(model, pointer) -> result`` called; the result is
    kept."""
    from ..models import build_model
    from ..provenance import source_sha256
    from .checkpoint import read_pointer, write_json_atomic

    run_dir = Path(run_dir)
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be train, valid or test, got {split!r}")
    if which not in ("best", "last"):
        raise ValueError(f"checkpoint must be best or last, got {which!r}")
    ptr = read_pointer(run_dir / CKPT, which)
    kept = _read_evals(run_dir)
    if cache and ptr is not None and kept.get(_eval_key(split, ptr), {}).get("source") == source_sha256():
        return {**kept[_eval_key(split, ptr)]["result"], "checkpoint": which}
    model = build_model(cfg.model_config())
    loaded = load_checkpoint(run_dir / CKPT, model, which)
    if loaded is None:
        raise CheckpointError(f"{run_dir}: no {which} checkpoint yet (no {CKPT}/{which}.json)")
    ptr, _ = loaded
    result = score(model, ptr)
    kept[_eval_key(split, ptr)] = {"source": source_sha256(), "result": result}
    try:
        write_json_atomic(run_dir / EVALS, kept)
    except OSError:
        pass  # a read-only run directory: the result is still returned
    return result


def _eval_key(split: str, ptr: dict) -> str:
    """Where ``evals.json`` keeps the result of ``split`` on the checkpoint ``ptr`` points to."""
    return f"{split}/{ptr['dir']}"


def _read_evals(run_dir: Path) -> dict:
    """The kept evaluation results (empty if none or unreadable)."""
    import json

    try:
        kept = json.loads((run_dir / EVALS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return kept if isinstance(kept, dict) else {}
