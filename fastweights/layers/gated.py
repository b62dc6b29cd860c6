"""Gated DeltaNet (Yang, Kautz, Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule", ICLR 2025)
as a token-mixing layer: ``gated-deltanet``.

Per head, from the layer input x_t (one fused projection emits every per-head quantity)::

    q_t, k_t, v_t = SiLU(conv(W_q x)_t), SiLU(conv(W_k x)_t), SiLU(conv(W_v x)_t)   (short causal convolutions)
    q_t, k_t      = q_t / |q_t| / sqrt(d), k_t / |k_t|                     (L2-normalised; the read scaled)
    beta_t        = sigmoid(w_beta x_t)
    g_t           = -exp(A_log) softplus(w_a x_t + dt_bias)                (Mamba2's decay, a_t = exp(g_t))
    S_t           = a_t S_{t-1} + beta_t k_t (v_t - a_t S_{t-1}^T k_t)^T,   o_t = S_t^T q_t
    y_t           = W_o [RMSNorm(o_t) * SiLU(W_gate x_t)]                  (per head, then heads concatenated)

The recurrence is :func:`fastweights.ops.gated_delta_rule`. ``conv`` is a depthwise causal convolution over
time (``conv_size`` taps per channel, no bias) on q, k and v; without it (``use_short_conv=False``) q, k and v
are SiLU of the projections. Without the output gate (``use_gate=False``) y_t = W_o RMSNorm(o_t).
RMSNorm's weight (size ``d_v``) is shared by the heads.

State: ``(S [B, H, d, d_v], conv [B, conv_size - 1, H, 2 d + d_v])``: the fast weight and the last
``conv_size - 1`` projected (pre-convolution) q, k, v inputs, so a call continues the convolution where the
last one stopped (kept in float32, float64 for float64 inputs); just ``(S,)`` without the convolution. Zeros
(``layers.reset_state``) are a fresh start: a zero buffer is the convolution's zero padding.

Options and defaults (the paper's, as its authors' reference layer in flash-linear-attention,
``fla/layers/gated_deltanet.py``, sets them; the paper's block diagram and text describe the same block):

* ``head_dim``: d_model // num_heads (this library's convention; the key size d);
* ``expand_v=2``: the value (and output-gate) size per head is ``d_v = expand_v * d``;
* ``use_short_conv=True``, ``conv_size=4``, ``conv_bias=False``;
* ``use_gate=True`` (the SiLU output gate before the RMSNorm's output), ``norm_eps=1e-5``;
* Mamba2's initialisation of the decay: ``A ~ U(0, 16)``, ``A_log = log A``; ``dt`` log-uniform in
  [0.001, 0.1] (floored at 1e-4) and ``dt_bias = softplus^-1(dt)``, one of each per head;
* ``impl``: the op's path (``"reference"`` is the step loop).

What the description left to us: the read is scaled by 1/sqrt(d) (flash-linear-attention's kernels default
``scale = d^-1/2``; the op itself does not scale); the convolution weights start as ``torch.nn.Conv1d``'s
(uniform in +-1/sqrt(conv_size)); the other projections as the other layers' (``torch.nn.Linear``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops._utils import acc_dtype
from ..ops.gated_delta_rule import gated_delta_rule
from .base import check_positive_int, head_dims, register
from .fwp import FastWeightLayer

__all__ = ["GatedDeltaNet"]

A_INIT_RANGE = (0.0, 16.0)  # A ~ U(0, 16) (Mamba2)
DT_RANGE, DT_FLOOR = (1e-3, 1e-1), 1e-4  # dt log-uniform in [0.001, 0.1], at least 1e-4 (Mamba2)


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


def _check_positive_number(name: str, value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def mamba2_decay_init(num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A_log, dt_bias)``, each ``[num_heads]``: Mamba2's initialisation of the decay's parameters."""
    A_log = torch.empty(num_heads).uniform_(*A_INIT_RANGE).log()
    lo, hi = math.log(DT_RANGE[0]), math.log(DT_RANGE[1])
    dt = torch.exp(torch.rand(num_heads) * (hi - lo) + lo).clamp(min=DT_FLOOR)
    dt_bias = dt + torch.log(-torch.expm1(-dt))  # softplus(dt_bias) = dt
    return A_log, dt_bias


@register("gated-deltanet")
class GatedDeltaNet(FastWeightLayer):
    """Gated DeltaNet (see the module docstring). State: ``(S [B, H, d, d_v], conv [B, conv_size - 1, H, 2d + d_v])``,
    or ``(S,)`` with ``use_short_conv=False``."""

    def __init__(self, d_model, num_heads, head_dim=None, expand_v=2, use_short_conv=True, conv_size=4,
                 conv_bias=False, use_gate=True, norm_eps=1e-5, impl="auto"):
        H, d = head_dims(d_model, num_heads, head_dim)[1:]
        dv = _check_positive_number("expand_v", expand_v) * d
        if dv != int(dv):
            raise ValueError(f"expand_v * head_dim must be an int, got expand_v={expand_v!r} with head_dim={d}")
        dv = int(dv)
        self.use_short_conv = _check_bool("use_short_conv", use_short_conv)
        conv_size = check_positive_int("conv_size", conv_size)
        if _check_bool("conv_bias", conv_bias) and not use_short_conv:
            raise ValueError("conv_bias=True needs use_short_conv=True (there is no convolution to add it to)")
        self.use_gate = _check_bool("use_gate", use_gate)
        self.norm_eps = float(_check_positive_number("norm_eps", norm_eps))
        # per head: q, k, v (convolved together), the output gate, beta, the decay's input
        super().__init__(d_model, num_heads, head_dim, impl, sizes=[2 * d + dv, dv if use_gate else 0, 1, 1],
                         out_dim=dv)
        self.expand_v, self.value_dim, self.conv_size = expand_v, dv, conv_size
        self.state_len = 2 if use_short_conv else 1
        if use_short_conv:
            bound = 1 / math.sqrt(conv_size)  # torch.nn.Conv1d's initialisation for a depthwise kernel
            self.conv_weight = nn.Parameter(torch.empty(conv_size, H, 2 * d + dv).uniform_(-bound, bound))
            self.conv_bias = nn.Parameter(torch.empty(H, 2 * d + dv).uniform_(-bound, bound)) if conv_bias else None
        A_log, dt_bias = mamba2_decay_init(H)
        self.A_log = nn.Parameter(A_log)
        self.dt_bias = nn.Parameter(dt_bias)
        self.norm_weight = nn.Parameter(torch.ones(dv))  # RMSNorm of each head's read

    def short_conv(self, x: torch.Tensor, buffer: torch.Tensor | None):
        """Causal depthwise convolution over time of ``x [B, T, H, c]``, continuing from ``buffer`` (the last
        ``conv_size - 1`` inputs, zeros at a fresh start); returns ``(y [B, T, H, c], new buffer)``."""
        B, T = x.shape[:2]
        if buffer is None:
            buffer = x.new_zeros(B, self.conv_size - 1, *x.shape[2:])
        xs = torch.cat([buffer.to(x.dtype), x], dim=1)  # [B, conv_size - 1 + T, H, c]
        y = sum(self.conv_weight[j] * xs[:, j: j + T] for j in range(self.conv_size))
        if self.conv_bias is not None:
            y = y + self.conv_bias
        # a copy (the state keeps only what it needs), float32 as every fast-weight state (lossless under autocast)
        return y, xs[:, xs.shape[1] - (self.conv_size - 1):].to(acc_dtype(x.dtype), copy=True)

    def head_outputs(self, x, state):
        qkv, gate, beta, a = self.project(x)  # [B, T, H, 2d + dv], [B, T, H, dv or 0], [B, T, H, 1] x2
        S, buffer = (None, None) if state is None else (state[0], state[1] if self.use_short_conv else None)
        if self.use_short_conv:
            qkv, buffer = self.short_conv(qkv, buffer)
        d = self.head_dim
        q, k, v = F.silu(qkv).split([d, d, self.value_dim], dim=-1)
        q = F.normalize(q, dim=-1) * d ** -0.5
        k = F.normalize(k, dim=-1)
        g = -self.A_log.exp() * F.softplus(a.squeeze(-1) + self.dt_bias)  # [B, T, H], <= 0
        o, S = gated_delta_rule(q, k, v, torch.sigmoid(beta.squeeze(-1)), g, initial_state=S,
                                output_final_state=True, impl=self.impl)  # o: [B, T, H, dv]
        o = F.rms_norm(o, (self.value_dim,), self.norm_weight, self.norm_eps)
        if self.use_gate:
            o = o * F.silu(gate)
        return o, ((S, buffer) if self.use_short_conv else (S,))

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", expand_v={self.expand_v}, use_short_conv={self.use_short_conv}, "
                f"conv_size={self.conv_size}, use_gate={self.use_gate}")
