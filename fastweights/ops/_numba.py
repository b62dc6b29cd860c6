"""Glue for the fused CPU step kernels, which are compiled with numba.

The kernels take NumPy views of contiguous CPU tensors (no copy), run ``prange`` over the
(batch, head) pairs, and are compiled for float32 and float64 on first use (cached on disk).
Inputs in lower precision are promoted to float32 before they reach a kernel.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

njit = numba.njit(parallel=True, cache=True, fastmath=False, nogil=True)
prange = numba.prange


def np_view(x: torch.Tensor) -> np.ndarray:
    """A NumPy view of a tensor (made contiguous, detached, on the CPU)."""
    return x.detach().contiguous().numpy()


def sync_threads() -> None:
    """Uses as many numba threads as torch uses (capped by numba's pool size), and keeps torch's count.

    The first call launches numba's thread pool; with the OpenMP threading layer that launch sets OpenMP's
    thread count to the pool size (NUMBA_NUM_THREADS, by default every CPU), which is torch's count too, so a
    process set to one thread (``--threads 1``) would run torch on every CPU from its first kernel on. The
    count torch had before is put back."""
    n = torch.get_num_threads()
    have = numba.get_num_threads()  # launches the pool on first use
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    want = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    if have != want:
        numba.set_num_threads(want)
