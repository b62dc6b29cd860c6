"""The modern self-referential weight matrix (Irie et al., ICML 2022) as a token-mixing layer, ``srwm``.

One SRWM per head (:func:`fastweights.ops.srwm`) reads its head's slice of the input, then the output
projection ``W_o: H*d -> d_model`` mixes the heads, as the authors' ``SRWMlayer`` does. There is no input
projection: the SRWM's own matrices are the slow net. The input is layer-normed by the block around the
mixer (``Block.norm1``: pre-LN), so the SRWM runs on the layer-normed input as in the paper.

The learned initial matrices ``W_y, W_q, W_k`` (``[1, H, d, d]``, [in, out] layout) are drawn N(0, 1/sqrt(d))
and ``w_b`` (``[1, H, d, 4]``) N(beta_init, 1/sqrt(d)) with ``beta_init=-1`` (the authors' default): the
learning rates start around sigmoid(-1) = 0.27.

State: the four matrices of each batch row, stored as their *change* from the learned initial matrices
(the op's state; the authors' layer stores "the shift from the base weights" too)::

    (W_y [B, H, d, d], W_q [B, H, d, d], W_k [B, H, d, d], w_b [B, H, d, 4])

so an all-zero row is a fresh start from the learned matrices (``reset_state`` zeroes finished rows), and
the carried state stays valid while the initial matrices are trained.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..ops.srwm import NUM_RATES, srwm
from .base import register
from .fwp import FUSED_IMPLS, FastWeightLayer

__all__ = ["SRWM"]


@register("srwm")
class SRWM(FastWeightLayer):
    """Self-referential weight matrix layer. Options: ``head_dim`` (must be d_model / num_heads: the heads read
    slices of the input), ``beta_init`` (mean of w_b's init, -1.0), ``impl`` ("auto", "fused", "reference")."""

    impls = FUSED_IMPLS
    state_len = 4

    def __init__(self, d_model, num_heads, head_dim=None, beta_init=-1.0, impl="auto"):
        super().__init__(d_model, num_heads, head_dim, impl, sizes=[])  # no input projection
        if self.num_heads * self.head_dim != self.d_model:
            raise ValueError(f"head_dim must be d_model / num_heads = {self.d_model / self.num_heads:g} (the SRWM "
                             f"heads read slices of the input), got {head_dim!r}")
        if isinstance(beta_init, bool) or not isinstance(beta_init, (int, float)) or not math.isfinite(beta_init):
            raise ValueError(f"beta_init must be a finite number, got {beta_init!r}")
        self.beta_init = float(beta_init)
        H, d = self.num_heads, self.head_dim
        std = 1.0 / math.sqrt(d)
        self.W_y = nn.Parameter(torch.randn(1, H, d, d) * std)
        self.W_q = nn.Parameter(torch.randn(1, H, d, d) * std)
        self.W_k = nn.Parameter(torch.randn(1, H, d, d) * std)
        self.w_b = nn.Parameter(torch.randn(1, H, d, NUM_RATES) * std + self.beta_init)

    def head_outputs(self, x, state):
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"{self.layer_name}: x must have shape [B, T, {self.d_model}], got {tuple(x.shape)}")
        B, T, _ = x.shape
        heads = x.reshape(B, T, self.num_heads, self.head_dim)
        y, final = srwm(heads, self.W_y, self.W_q, self.W_k, self.w_b, initial_state=state,
                        output_final_state=True, impl=self.impl)  # y: [B, T, H, d]
        return y, tuple(final)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", beta_init={self.beta_init}"
