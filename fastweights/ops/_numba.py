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
    """Uses as many numba threads as torch uses (capped by numba's pool size)."""
    want = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != want:
        numba.set_num_threads(want)
