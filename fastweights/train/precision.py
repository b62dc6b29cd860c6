"""Training precision, applied from outside the model.

* ``fp32``: everything in float32.
* ``bf16``: the forward pass (and validation) under ``torch.autocast(device, torch.bfloat16)``: matmuls and
  linear layers run in bfloat16, while the master weights, the gradients they receive and the optimizer state
  stay float32 and the fast-weight ops accumulate their state in float32 (see :mod:`fastweights.ops`).
* ``auto``: bf16 where this machine's measured bfloat16 matmul is faster than its float32 one
  (:func:`matmul_speed`, measured once per machine, torch version, device and thread count and cached under
  ``$FASTWEIGHTS_CACHE`` or ``~/.cache/fastweights``), fp32 otherwise. A run records what ``auto`` chose, so
  ``--resume`` continues in the same precision.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import torch

PRECISIONS = ("fp32", "bf16", "auto")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MATMUL_SIZE = 1024
AUTO_MARGIN = 1.2  # bf16 must be this much faster than fp32 to be chosen (noise and the casts' cost)


def cache_root() -> Path:
    return Path(os.environ.get("FASTWEIGHTS_CACHE") or Path.home() / ".cache" / "fastweights")


def _machine_key(device: torch.device, threads: int) -> str:
    from ..provenance import cpu_model

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return f"{device.type}|{name}|torch {torch.__version__}|threads {threads}"


def measure_matmul(dtype: torch.dtype, device: torch.device, size: int = MATMUL_SIZE, seconds: float = 0.5) -> float:
    """GFLOP/s of a ``size`` x ``size`` matmul in ``dtype`` on ``device`` (the best of a few timed bursts)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(3):
        sync()
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds / 3:
            a @ b
            n += 1
        sync()
        best = max(best, 2 * size**3 * n / (time.perf_counter() - t0) / 1e9)
    return best


def matmul_speed(device: torch.device | str = "cpu", refresh: bool = False) -> dict:
    """``{"fp32": GFLOP/s, "bf16": GFLOP/s}`` of this machine's matmul at this thread count, measured once and
    cached (``refresh`` measures again)."""
    device = torch.device(device)
    threads = torch.get_num_threads()
    key = _machine_key(device, threads)
    path = cache_root() / "matmul_speed.json"
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    if not refresh and isinstance(cache.get(key), dict) and {"fp32", "bf16"} <= set(cache[key]):
        return cache[key]
    speed = {name: round(measure_matmul(dtype, device), 1) for name, dtype in DTYPES.items()}
    cache[key] = speed
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache only costs a measurement next time
    return speed


def resolve(precision: str, device: torch.device | str = "cpu") -> str:
    """``fp32`` or ``bf16``: ``precision`` itself, or what ``auto`` picks on ``device`` (see the module doc)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    speed = matmul_speed(device)
    return "bf16" if speed["bf16"] > AUTO_MARGIN * speed["fp32"] else "fp32"


def autocast(precision: str, device: torch.device):
    """The context a forward pass runs in: ``torch.autocast`` to bfloat16 for ``bf16``, nothing for ``fp32``."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"precision must be fp32 or bf16 here (resolve 'auto' first), got {precision!r}")
