"""The stack of pre-LN residual blocks: the trunk of the sequence models and of the RL fast-weight cores.

``BlockStack(layer, d_model, num_layers, num_heads, ...)`` holds ``num_layers`` blocks, each
``x + Dropout(mixer(LN(x)))`` then ``x + Dropout(FF(LN(x)))`` with ``FF = W2 ReLU(W1 ·)`` and the mixer
from the layer registry. ``stack(x [B, T, d_model], state=None, done=None) -> (y, state)``: the state
is a tuple with one layer state per block (batch first; None or a zero row is a fresh start), ``done``
([B] bool) resets those rows before this call, and a call on one step (T = 1) carrying the state gives
what the whole sequence gives at that step.

The stack is an ``nn.ModuleList`` of its blocks, so its owner's parameter names are ``blocks.<i>.*``,
as they were before the stack was a class of its own (checkpoints keep loading). The final LayerNorm
after the stack belongs to the owner (``norm.*``) for the same reason.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn

from ..layers import build_layer
from ..layers.base import check_probability
from ..layers.dropout import Dropout
from ..layers.state import reset_state
from ..ops._utils import check_positive_int


class Block(nn.Module):
    """``x + Dropout(mixer(LN(x)))``, then ``x + Dropout(FF(LN(x)))`` with ``FF = W2 ReLU(W1 ·)``."""

    def __init__(self, layer: str, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.0,
                 head_dim: int | None = None, layer_options: dict | None = None):
        super().__init__()
        options = dict(layer_options or {})
        if head_dim is not None:
            options["head_dim"] = head_dim
        self.norm1 = nn.LayerNorm(d_model)
        self.mixer = build_layer(layer, d_model=d_model, num_heads=num_heads, **options)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))
        self.drop = Dropout(dropout)  # nn.Dropout's maths, a cheaper mask (layers.dropout)
        # mixers whose forward takes ``keep`` compute the kept positions' outputs themselves (e.g. attention's
        # queries at those positions only); the others' full outputs are indexed
        self._mixer_keeps = "keep" in inspect.signature(self.mixer.forward).parameters

    def forward(self, x, state=None, keep=None):
        """``keep`` ([B, T] bool, optional): only these positions' outputs are wanted; the mixer still reads every
        position (its state is the same), the rest of the block runs on the kept positions only, and the output
        is ``[N, d_model]``, the kept positions in row-major order (what ``x[keep]`` would give)."""
        if keep is not None and self._mixer_keeps:
            y, state = self.mixer(self.norm1(x), state, keep=keep)  # [N, d_model]
            x = x[keep]
        else:
            y, state = self.mixer(self.norm1(x), state)  # [B, T, d_model]
            if keep is not None:
                x, y = x[keep], y[keep]  # [N, d_model]
        x = x + self.drop(y)
        x = x + self.drop(self.ff(self.norm2(x)))
        return x, state


class BlockStack(nn.ModuleList):
    """``num_layers`` blocks (:class:`Block`) of the mixer ``layer``, a ``fastweights.layers.layer_names()`` name.

    ``d_ff`` None is ``4 * d_model``; ``head_dim`` None is ``d_model // num_heads``; ``layer_options`` are
    the mixer's own keyword options (e.g. ``{"window": 256}`` for the transformer)."""

    def __init__(self, layer: str, d_model: int, num_layers: int, num_heads: int, d_ff: int | None = None,
                 dropout: float = 0.0, head_dim: int | None = None, layer_options: dict | None = None):
        check_positive_int("num_layers", num_layers)
        check_positive_int("d_model", d_model)
        d_ff = 4 * d_model if d_ff is None else d_ff
        check_positive_int("d_ff", d_ff)
        dropout = check_probability("dropout", dropout)
        if layer_options is not None and not isinstance(layer_options, dict):
            raise ValueError(f"layer_options must be a dict or None, got {layer_options!r}")
        super().__init__(Block(layer, d_model, num_heads, d_ff, dropout, head_dim, layer_options)
                         for _ in range(num_layers))

    def forward(self, x, state=None, done=None, keep=None):
        """``x [B, T, d_model]`` -> ``(y [B, T, d_model], (state of block 0, ...))``.

        ``keep`` ([B, T] bool, optional): the positions whose outputs are needed (e.g. those a loss reads). The
        last block's residual and feedforward then run on those positions only, and y is ``[N, d_model]``, equal
        to ``y_full[keep]`` (the blocks are position-wise after the mixers; every mixer still reads every
        position, so the state is unchanged). That skips the feedforward of the last block at the other
        positions: a third of the linear layers' work of a 2-block model where 6% of positions are kept."""
        if state is not None and done is not None:
            state = reset_state(state, done)
        states = [None] * len(self) if state is None else list(state)
        if len(states) != len(self):
            raise ValueError(f"state must hold one entry per block ({len(self)}), got {len(states)}")
        if keep is not None and (keep.dtype != torch.bool or keep.shape != x.shape[:2]):
            raise ValueError(f"keep must be a [B, T] = {list(x.shape[:2])} bool tensor, got "
                             f"{list(keep.shape)} {keep.dtype}")
        new_states = []
        for i, (block, s) in enumerate(zip(self, states)):
            x, s = block(x, s, keep if i == len(self) - 1 else None)
            new_states.append(s)
        return x, tuple(new_states)
