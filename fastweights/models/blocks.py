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

import torch.nn as nn

from ..layers import build_layer
from ..layers.base import check_probability
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
        self.drop = nn.Dropout(dropout)

    def forward(self, x, state=None):
        y, state = self.mixer(self.norm1(x), state)  # [B, T, d_model]
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

    def forward(self, x, state=None, done=None):
        """``x [B, T, d_model]`` -> ``(y [B, T, d_model], (state of block 0, ...))``."""
        if state is not None and done is not None:
            state = reset_state(state, done)
        states = [None] * len(self) if state is None else list(state)
        if len(states) != len(self):
            raise ValueError(f"state must hold one entry per block ({len(self)}), got {len(states)}")
        new_states = []
        for block, s in zip(self, states):
            x, s = block(x, s)
            new_states.append(s)
        return x, tuple(new_states)
