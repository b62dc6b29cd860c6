"""Pieces every training loop of the package shares (supervised, language model, RL): the process group
under ``torchrun``, the device, capturing and restoring every RNG for exact resume, the signal handler
that turns SIGTERM/SIGINT into "save and stop", the time budget on a wall or CPU clock, and the message
of a diverged run."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError, read_pointer

BUDGET_CLOCKS = ("wall", "cpu")


def init_distributed():
    """``(torch.distributed, rank, world)`` under ``torchrun`` (``WORLD_SIZE`` > 1; gloo on CPU, NCCL on
    GPU), else ``(None, 0, 1)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None, 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist, dist.get_rank(), dist.get_world_size()


def device_for_rank(rank: int) -> torch.device:
    """This process's GPU (``LOCAL_RANK``) where CUDA exists, else the CPU."""
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def capture_rng() -> dict:
    """Every RNG a run draws from (torch, Python, NumPy, CUDA), as a ``weights_only``-loadable dict."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


class StopSignals:
    """SIGTERM and SIGINT ask the loop to save and stop after the current step (a second SIGINT
    interrupts at once)."""

    def __init__(self):
        self.received = None
        self._old = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    @staticmethod
    def exit_code(stopped) -> int | None:
        """The exit status of a run whose summary says ``"stopped": stopped``: 128 + the signal's number for
        ``"SIGTERM"`` (143) and ``"SIGINT"`` (130), as a shell reports a process the signal ended; None
        otherwise (completed, or stopped by the time budget)."""
        if stopped in ("SIGTERM", "SIGINT"):
            return 128 + int(getattr(signal, stopped))
        return None


def diverged_message(step: int, what: str, value: float, ckpt_root: Path) -> str:
    """The one-line error of a NaN/inf loss or gradient, saying which checkpoint is kept."""
    try:
        ptr = read_pointer(ckpt_root, "last")
    except CheckpointError:
        ptr = None
    kept = (f"the last good checkpoint (step {ptr['step']}) is kept in {ckpt_root}; continue with --resume "
            f"(e.g. with a lower --lr)") if ptr else "no checkpoint had been saved yet"
    return f"{what} is {value} at step {step}; stopped before updating the weights; {kept}"


class Budget:
    """A time budget of ``minutes`` (None: none) on a ``"wall"`` or ``"cpu"`` clock (the process's CPU
    time, all threads summed), counting ``elapsed_before`` seconds from earlier sessions of the run.
    Under DDP rank 0's clock decides, so every process stops at the same step."""

    def __init__(self, minutes: float | None, clock: str = "wall", elapsed_before: float = 0.0, dist=None):
        if clock not in BUDGET_CLOCKS:
            raise ValueError(f"budget clock must be one of {list(BUDGET_CLOCKS)}, got {clock!r}")
        self.minutes, self.dist = minutes, dist
        self.limit_s = minutes * 60.0 if minutes is not None else None
        self._clock = time.process_time if clock == "cpu" else time.time
        self._before, self._start = float(elapsed_before), self._clock()

    def elapsed(self) -> float:
        """Seconds spent on the budget's clock by the whole run (earlier sessions plus this one)."""
        return self._before + (self._clock() - self._start)

    def spent(self) -> bool:
        """Whether the budget is used up (always False without one)."""
        if self.limit_s is None:
            return False
        over = torch.tensor([float(self.elapsed() > self.limit_s)], dtype=torch.float64)
        if self.dist is not None:
            self.dist.broadcast(over, src=0)
        return bool(over[0] > 0)


def gather_from_ranks(dist, world: int, obj) -> list:
    """``[obj]`` in one process; under DDP every process's ``obj``, in rank order (for checkpoints that keep
    each process's RNG or carried state)."""
    if dist is None:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def share_best(dist, best, step: int, pointers: list) -> tuple:
    """Rank 0's best-validation record on every process, and the checkpoint pointers to write at ``step``
    (``"best"`` added where rank 0 found a new best at this step). Unchanged in one process."""
    if dist is None:
        return best, pointers
    shared = [best]
    dist.broadcast_object_list(shared, src=0)
    best = shared[0]
    if best["step"] == step:
        pointers = ["last", "best"]
    return best, pointers

