"""The Delta LSTM (Irie et al. 2021, the paper's v4): three feedforward delta nets and three recurrent
delta-rule fast matrices, one per gate g in (i, u, o), per head:

    S_g,t = S_g,t-1 + beta_g,t k_g,t (v_g,t - S_g,t-1^T k_g,t)^T,      z_g,t = S_g,t^T q_g,t
    R_g,t = R_g,t-1 + rbeta_g,t rk_g,t (rv_g,t - R_g,t-1^T rk_g,t)^T
    h~ = softmax(h_{t-1});  a_g = z_g,t + R_g,t^T h~
    i = sigmoid(a_i),  u = a_u,  o = sigmoid(a_o)
    c_t = i * u + (1 - i) * c_{t-1},   h_t = c_t * o                        (the output is h)

The gates are stacked in dim 3 of every input, in the order (i, u, o). The layer applies the feature
maps (softmax recurrent keys, sigmoid betas); the op takes them as given.

Three paths:
  * ``reference``: a step loop, autograd through it.
  * ``step``: the same step loop, lean (:mod:`fastweights.ops._step`); ``auto`` takes it for a few steps.
  * ``fused`` (CPU): the three z's come from ONE fused delta-rule call (the gate dim folded into the
    heads); the recurrent part runs in a numba kernel whose backward rebuilds R_{t-1} from R_t by undoing
    the rank-one update, storing only the per-step new values, gate values, c and h.
"""

from __future__ import annotations

import torch

from . import _numba
from ._recurrent_read import delta_lstm_bwd, delta_lstm_fwd
from ._step import delta_write, read, stack_steps
from ._utils import (acc_dtype, autocast_float32, check_dtypes_and_device, check_tensor, empty_result, resolve_impl,
                     unpack_state)
from .delta_rnn import _check_recurrent_inputs
from .delta_rule import delta_rule

STATE_NAMES = ("S", "R", "c", "h")
NUM_GATES = 3


@autocast_float32
def delta_lstm(q, k, v, beta, rk, rv, rbeta, *, initial_state=None, output_final_state=False, impl="auto"):
    """Delta LSTM fast weights (gates stacked in dim 3 in the order i, u, o).

    Args:
        q, k: ``[B, T, H, 3, Dk]``; v: ``[B, T, H, 3, Dv]``; beta: ``[B, T, H, 3]`` (three feedforward
            delta nets).
        rk, rv: ``[B, T, H, 3, Dv]``; rbeta: ``[B, T, H, 3]`` (keys, values and learning rates of the
            three recurrent fast matrices; the layer applies softmax to rk and sigmoid to the betas).
        initial_state: None (all zeros) or a tuple
            ``(S [B, H, 3, Dk, Dv], R [B, H, 3, Dv, Dv], c [B, H, Dv], h [B, H, Dv])``.
        output_final_state: also return ``(S_T, R_T, c_T, h_T)``.
        impl: ``"auto"`` (``"step"`` for at most ``_step.STEP_MAX_T`` steps, else ``"fused"`` on CPU and
            ``"reference"`` elsewhere), ``"fused"``, ``"step"`` or ``"reference"``.

    Returns:
        ``(o, state)``: o (the cell outputs h) is ``[B, T, H, Dv]`` in the input dtype; state (or None) is
        the tuple ``(S, R, c, h)`` in float32 (float64 for float64 inputs).
    """
    B, T, H, Dk, Dv = _check_gated_qkv(q, k, v, beta)
    _check_recurrent_inputs(rk, rv, rbeta, (B, T, H, NUM_GATES, Dv), "[B, T, H, 3, D_v]", "[B, T, H, 3]")
    shapes = [(B, H, NUM_GATES, Dk, Dv), (B, H, NUM_GATES, Dv, Dv), (B, H, Dv), (B, H, Dv)]
    s0, r0, c0, h0 = unpack_state(initial_state, STATE_NAMES, shapes)
    inputs = [("q", q), ("k", k), ("v", v), ("beta", beta), ("rk", rk), ("rv", rv), ("rbeta", rbeta)]
    state = [s0, r0, c0, h0]
    check_dtypes_and_device(inputs, [(f"initial_state.{n}", s) for n, s in zip(STATE_NAMES, state)])
    fn = resolve_impl("delta_lstm", impl, {"reference": _delta_lstm_reference, "fused": _delta_lstm_fused,
                                           "step": _delta_lstm_step}, ["fused"], q.device, steps=T)
    if B == 0 or T == 0:
        o, final = empty_result([x for _, x in inputs] + state, (B, T, H, Dv), v.dtype, state, shapes)
        return o, (final if output_final_state else None)
    return fn(q, k, v, beta, rk, rv, rbeta, s0, r0, c0, h0, output_final_state)


def _check_gated_qkv(q, k, v, beta):
    """Checks the gated layout ``[B, T, H, 3, D]`` and returns (B, T, H, Dk, Dv)."""
    check_tensor("q", q, 5, "[B, T, H, 3, D_k]")
    check_tensor("k", k, 5, "[B, T, H, 3, D_k]")
    check_tensor("v", v, 5, "[B, T, H, 3, D_v]")
    check_tensor("beta", beta, 4, "[B, T, H, 3]")
    if q.shape[3] != NUM_GATES:
        raise ValueError(f"q must stack the {NUM_GATES} gates (i, u, o) in dim 3, got shape {tuple(q.shape)}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:4] != q.shape[:4]:
        raise ValueError(f"v must share [B, T, H, 3] with q, got {tuple(v.shape)} and {tuple(q.shape)}")
    if beta.shape != q.shape[:4]:
        raise ValueError(f"beta must have shape [B, T, H, 3] = {tuple(q.shape[:4])}, got {tuple(beta.shape)}")
    B, T, H, _, Dk = q.shape
    return B, T, H, Dk, v.shape[-1]


def _start(q, k, v, beta, rk, rv, rbeta, s0, r0, c0, h0):
    """The reference's and the step path's start: the inputs in the accumulation dtype, and the state
    (S, R, c, h), zeros where not given."""
    B, _, H, G, Dk = q.shape
    Dv = v.shape[-1]
    dt = acc_dtype(q.dtype)
    xs = tuple(x.to(dt) for x in (q, k, v, beta, rk, rv, rbeta))
    S = xs[0].new_zeros(B, H, G, Dk, Dv) if s0 is None else s0.to(dt)
    R = xs[0].new_zeros(B, H, G, Dv, Dv) if r0 is None else r0.to(dt)
    c = xs[0].new_zeros(B, H, Dv) if c0 is None else c0.to(dt)
    h = xs[0].new_zeros(B, H, Dv) if h0 is None else h0.to(dt)
    return xs, S, R, c, h


def _delta_lstm_reference(q, k, v, beta, rk, rv, rbeta, s0, r0, c0, h0, output_final_state):
    in_dtype, T = v.dtype, q.shape[1]
    (q, k, v, beta, rk, rv, rbeta), S, R, c, h = _start(q, k, v, beta, rk, rv, rbeta, s0, r0, c0, h0)
    outs = []
    for t in range(T):
        kt = k[:, t]  # [B, H, 3, Dk]
        u = beta[:, t, ..., None] * (v[:, t] - torch.einsum("bhgk,bhgkv->bhgv", kt, S))
        S = S + kt[..., :, None] * u[..., None, :]
        z = torch.einsum("bhgk,bhgkv->bhgv", q[:, t], S)  # [B, H, 3, Dv]
        rkt = rk[:, t]  # [B, H, 3, Dv]
        ur = rbeta[:, t, ..., None] * (rv[:, t] - torch.einsum("bhgi,bhgij->bhgj", rkt, R))
        R = R + rkt[..., :, None] * ur[..., None, :]
        a = z + torch.einsum("bhi,bhgij->bhgj", torch.softmax(h, dim=-1), R)
        i, uu, o = torch.sigmoid(a[:, :, 0]), a[:, :, 1], torch.sigmoid(a[:, :, 2])
        c = i * uu + (1 - i) * c
        h = c * o
        outs.append(h)
    out = torch.stack(outs, dim=1).to(in_dtype)
    return out, ((S, R, c, h) if output_final_state else None)


def _delta_lstm_step(q, k, v, beta, rk, rv, rbeta, s0, r0, c0, h0, output_final_state):
    """The reference's recurrence on the step path (:mod:`._step`): for generation's one-step calls."""
    in_dtype, T = v.dtype, q.shape[1]
    (q, k, v, beta, rk, rv, rbeta), S, R, c, h = _start(q, k, v, beta, rk, rv, rbeta, s0, r0, c0, h0)
    outs = []
    for t in range(T):
        S = delta_write(S, k[:, t], v[:, t], beta[:, t])
        R = delta_write(R, rk[:, t], rv[:, t], rbeta[:, t])
        a = read(S, q[:, t]) + read(R, torch.softmax(h, dim=-1)[:, :, None])  # [B, H, 3, Dv]
        i, uu, o = torch.sigmoid(a[:, :, 0]), a[:, :, 1], torch.sigmoid(a[:, :, 2])
        c = i * uu + (1 - i) * c
        h = c * o
        outs.append(h)
    return stack_steps(outs).to(in_dtype), ((S, R, c, h) if output_final_state else None)


def _delta_lstm_fused(q, k, v, beta, rk, rv, rbeta, s0, r0, c0, h0, output_final_state):
    B, T, H, G, Dk = q.shape
    Dv = v.shape[-1]
    in_dtype = v.dtype
    dt = acc_dtype(q.dtype)
    # the three feedforward delta nets are one delta rule over H * 3 heads
    q, k, v = (x.to(dt).reshape(B, T, H * G, -1) for x in (q, k, v))
    beta = beta.to(dt).reshape(B, T, H * G)
    S0 = None if s0 is None else s0.to(dt).reshape(B, H * G, Dk, Dv)
    z, S = delta_rule(q, k, v, beta, initial_state=S0, output_final_state=True, impl="fused")
    z = z.reshape(B, T, H, G, Dv)
    R0 = q.new_zeros(B, H, G, Dv, Dv) if r0 is None else r0.to(dt)
    C0 = q.new_zeros(B, H, Dv) if c0 is None else c0.to(dt)
    H0 = q.new_zeros(B, H, Dv) if h0 is None else h0.to(dt)
    Hs, Cs, R = _DeltaLSTMRecurrent.apply(z.contiguous(),
                                          *(x.to(dt).contiguous() for x in (rk, rv, rbeta, R0, C0, H0)))
    out = Hs.to(in_dtype)
    if not output_final_state:
        return out, None
    return out, (S.reshape(B, H, G, Dk, Dv), R, Cs[:, -1], Hs[:, -1])


class _DeltaLSTMRecurrent(torch.autograd.Function):
    """The recurrent part on contiguous gated tensors; numba kernels, undo-the-update backward.
    Returns the cell outputs h and cells c (``[B, T, H, Dv]``) and the final R."""

    @staticmethod
    def forward(ctx, z, rk, rv, rb, R0, c0, h0):
        B, T, H, G, D = z.shape
        Hs = z.new_empty(B, T, H, D)
        Cs = z.new_empty(B, T, H, D)
        Gates = torch.empty_like(z)
        U = torch.empty_like(z)
        RT = torch.empty_like(R0)
        _numba.sync_threads()
        delta_lstm_fwd(*(_numba.np_view(x) for x in (z, rk, rv, rb, R0, c0, h0)),
                       *(x.numpy() for x in (Hs, Cs, Gates, U, RT)))
        ctx.save_for_backward(rk, rv, rb, U, Gates, Cs, Hs, c0, h0, RT)
        return Hs, Cs, RT

    @staticmethod
    def backward(ctx, dHs, dCs, dRT):
        rk, rv, rb, U, Gates, Cs, Hs, c0, h0, RT = ctx.saved_tensors
        dt = U.dtype
        dz, drk, drv = (torch.empty_like(x) for x in (U, rk, rv))
        drb = torch.empty_like(rb)
        dR0 = torch.empty_like(RT)
        dc0 = torch.empty_like(c0)
        dh0 = torch.empty_like(h0)
        _numba.sync_threads()
        delta_lstm_bwd(*(_numba.np_view(x) for x in (rk, rv, rb, U, Gates, Cs, Hs, c0, h0, RT)),
                       *(_numba.np_view(x.to(dt)) for x in (dHs, dCs, dRT)),
                       *(x.numpy() for x in (dz, drk, drv, drb, dR0, dc0, dh0)))
        return dz, drk, drv, drb, dR0, dc0, dh0
