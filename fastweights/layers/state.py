"""Operations on layer and model states.

A state is None (fresh start) or a nested tuple/list/dict of tensors whose first dimension is the batch.
"""

from __future__ import annotations

import torch


def map_state(state, fn):
    """Applies ``fn`` to every tensor of a (nested) state; None stays None."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {k: map_state(v, fn) for k, v in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(s, fn) for s in state)
    return state


def detach_state(state):
    """Cuts the graph between segments (truncated BPTT): values carry over, gradients do not."""
    return map_state(state, lambda t: t.detach())


def reset_state(state, done: torch.Tensor):
    """Zeroes the rows of ``state`` where ``done`` ([B] bool) is true: those sequences start afresh.

    Every tensor of the state must have the batch as its first dimension; a zero state equals a fresh
    start for every layer (the layers' conventions guarantee it)."""
    if state is None:
        return None
    done = torch.as_tensor(done, dtype=torch.bool)
    if done.dim() != 1:
        raise ValueError(f"done must be a [B] bool mask, got shape {tuple(done.shape)}")

    def zero_rows(t: torch.Tensor) -> torch.Tensor:
        if t.shape[0] != done.shape[0]:
            raise ValueError(f"done has {done.shape[0]} rows but a state tensor has batch {t.shape[0]}")
        keep = (~done).to(device=t.device)
        keep = keep.reshape(-1, *([1] * (t.dim() - 1)))
        return t * keep.to(t.dtype) if t.is_floating_point() else t * keep

    return map_state(state, zero_rows)
