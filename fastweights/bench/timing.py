"""Timing and memory measurement shared by the benchmarks.

* Time: wall-clock milliseconds of one forward + backward, with a dense random upstream gradient
  (``.sum().backward()`` would hide real costs), median over repeats after warm-up. Implementations
  being compared are timed interleaved, round-robin, so that machine noise hits them alike.
* Peak memory: the peak of live PyTorch CPU/GPU allocations during one forward + backward, above what
  was allocated before it, read from the PyTorch profiler's memory events (CPU) or from
  ``torch.cuda.max_memory_allocated`` (CUDA). Inputs themselves are not counted.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping

import torch


def clear_grads(inputs: Mapping[str, torch.Tensor]) -> None:
    for x in inputs.values():
        if isinstance(x, torch.Tensor):
            x.grad = None


def fwd_bwd(run: Callable[[], torch.Tensor], inputs: Mapping[str, torch.Tensor], grad: torch.Tensor) -> None:
    clear_grads(inputs)
    out = run()
    out.backward(grad)


def time_interleaved(fns: Mapping[object, Callable[[], None]], repeats: int, warmup: int = 1) -> dict[object, float]:
    """Median milliseconds of each callable over ``repeats`` runs after ``warmup``, timed round-robin."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def peak_memory_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Peak of live allocations made during ``fn()`` above the level before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak
