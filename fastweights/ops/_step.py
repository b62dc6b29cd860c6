"""The step paths (``impl="step"``): each op's reference recurrence, one step at a time, without per-call setup.

Generation feeds one token per call (T = 1). A chunkwise path then pads the step to a chunk, builds and inverts
a C x C triangle and runs its autograd Function; a fused path allocates its per-step buffers and crosses into
numba. The step path is the reference's own maths, write then read, on the state in the accumulation dtype
(float32; float64 for float64 inputs), written with one batched matmul per read and one broadcast outer product
per write, out of place (so autograd runs through it and a caller's initial state is never modified).

``impl="auto"`` takes it for calls of at most :data:`STEP_MAX_T` steps, :data:`STEP_MAX_T_GRAD` while autograd
records (:func:`._utils.use_step_path` is the one place that decides); ``impl="step"`` forces it at any length.
Beyond a few steps its cost grows with T, one set of small ops per step, while the chunkwise and fused paths'
grows far more slowly.
"""

from __future__ import annotations

import torch

# Calls of at most this many steps run on the step path under impl="auto"; with autograd recording, at most
# STEP_MAX_T_GRAD (the step path's backward is autograd's, one node per small op). Measured on an AMD EPYC (1 thread,
# B=1, H=4, D=32, float32, the delta rule): forward, the step path took 55 / 88 / 148 / 313 us at T = 1 / 2 / 4 / 8
# and the chunkwise path 170 / 189 / 187 / 256 us; forward + backward, 340 / 592 / 1852 us against 636 / 884 /
# 782 us at T = 1 / 2 / 4.
STEP_MAX_T = 4
STEP_MAX_T_GRAD = 2


def read(S: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``S^T x`` per leading index: S ``[..., Dk, Dv]``, x ``[..., Dk]`` -> ``[..., Dv]``; broadcast over the
    leading dims when they differ (e.g. shared weights ``[H, Dk, Dv]`` against ``[B, H, Dk]``)."""
    lead = x.shape[:-1]
    if lead != S.shape[:-2]:
        return (x.unsqueeze(-2) @ S).squeeze(-2)
    Dk, Dv = S.shape[-2:]
    # one bmm on flattened views: a third of the small ops a broadcasting matmul dispatches
    return torch.bmm(x.reshape(-1, 1, Dk), S.reshape(-1, Dk, Dv)).view(*lead, Dv)


def delta_write(S: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """One delta-rule write: ``S + k (beta (v - S^T k))^T``; S ``[..., Dk, Dv]``, k ``[..., Dk]``, v ``[..., Dv]``,
    beta ``[...]``."""
    u = (v - read(S, k)).mul_(beta.unsqueeze(-1))
    return torch.addcmul(S, k.unsqueeze(-1), u.unsqueeze(-2))


def stack_steps(outs: list[torch.Tensor]) -> torch.Tensor:
    """The per-step outputs ``[B, ...]`` as ``[B, T, ...]`` (no copy for one step)."""
    return outs[0].unsqueeze(1) if len(outs) == 1 else torch.stack(outs, dim=1)
