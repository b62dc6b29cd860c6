"""The Delta RNN (Irie et al. 2021): a feedforward delta net plus a recurrent delta-rule fast matrix,
per head:

    S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T               (the feedforward delta net)
    R_t = R_{t-1} + rbeta_t rk_t (rv_t - R_{t-1}^T rk_t)^T           (the recurrent fast matrix)
    y_t = S_t^T q_t + R_t^T softmax(y_{t-1}),   y_0 = 0              (write, then read)

The layer applies the feature maps (softmax keys rk, sigmoid betas); the op takes them as given.

Three paths:
  * ``reference``: a step loop, autograd through it.
  * ``step``: the same step loop, lean (:mod:`fastweights.ops._step`); ``auto`` takes it for a few steps.
  * ``fused`` (CPU): the S part ``z_t = S_t^T q_t`` is exactly a delta rule of (q, k, v, beta) and runs
    on the delta rule's fused path (:mod:`fastweights.ops._fused`); the recurrent R part runs in
    a numba kernel (``prange`` over batch x head, sequential over time) whose backward rebuilds R_{t-1}
    from R_t by undoing the rank-one update, storing only the per-step new values and outputs.
"""

from __future__ import annotations

import torch

from . import _numba
from ._recurrent_read import delta_rnn_bwd, delta_rnn_fwd
from ._step import delta_write, read, stack_steps
from ._utils import (acc_dtype, autocast_float32, check_dtypes_and_device, check_qkv, check_tensor, empty_result,
                     resolve_impl, unpack_state)
from .delta_rule import delta_rule

STATE_NAMES = ("S", "R", "y")


@autocast_float32
def delta_rnn(q, k, v, beta, rk, rv, rbeta, *, initial_state=None, output_final_state=False, impl="auto"):
    """Delta RNN fast weights.

    Args:
        q, k: ``[B, T, H, Dk]``; v: ``[B, T, H, Dv]``; beta: ``[B, T, H]`` (feedforward delta net).
        rk, rv: ``[B, T, H, Dv]``; rbeta: ``[B, T, H]`` (keys, values and learning rates of the
            recurrent fast matrix R; the layer applies softmax to rk and sigmoid to the betas).
        initial_state: None (all zeros) or a tuple ``(S [B, H, Dk, Dv], R [B, H, Dv, Dv], y [B, H, Dv])``.
        output_final_state: also return ``(S_T, R_T, y_T)``.
        impl: ``"auto"`` (``"step"`` for at most ``_step.STEP_MAX_T`` steps, else ``"fused"`` on CPU and
            ``"reference"`` elsewhere), ``"fused"``, ``"step"`` or ``"reference"``.

    Returns:
        ``(o, state)``: o is ``[B, T, H, Dv]`` in the input dtype; state (or None) is the tuple
        ``(S, R, y)`` in float32 (float64 for float64 inputs).
    """
    B, T, H, Dk, Dv = check_qkv(q, k, v, beta)
    _check_recurrent_inputs(rk, rv, rbeta, (B, T, H, Dv), "[B, T, H, D_v]", "[B, T, H]")
    shapes = [(B, H, Dk, Dv), (B, H, Dv, Dv), (B, H, Dv)]
    s0, r0, y0 = unpack_state(initial_state, STATE_NAMES, shapes)
    inputs = [("q", q), ("k", k), ("v", v), ("beta", beta), ("rk", rk), ("rv", rv), ("rbeta", rbeta)]
    check_dtypes_and_device(inputs, [("initial_state.S", s0), ("initial_state.R", r0), ("initial_state.y", y0)])
    fn = resolve_impl("delta_rnn", impl, {"reference": _delta_rnn_reference, "fused": _delta_rnn_fused,
                                          "step": _delta_rnn_step}, ["fused"], q.device, steps=T)
    if B == 0 or T == 0:
        o, final = empty_result([x for _, x in inputs] + [s0, r0, y0], (B, T, H, Dv), v.dtype, [s0, r0, y0], shapes)
        return o, (final if output_final_state else None)
    return fn(q, k, v, beta, rk, rv, rbeta, s0, r0, y0, output_final_state)


def _check_recurrent_inputs(rk, rv, rbeta, shape, layout, beta_layout):
    """Checks rk, rv (``shape``) and rbeta (``shape[:-1]``) of a recurrent fast matrix."""
    shape = tuple(shape)
    for name, x in (("rk", rk), ("rv", rv)):
        check_tensor(name, x, len(shape), layout)
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must have shape {layout} = {shape}, got {tuple(x.shape)}")
    check_tensor("rbeta", rbeta, len(shape) - 1, beta_layout)
    if tuple(rbeta.shape) != shape[:-1]:
        raise ValueError(f"rbeta must have shape {beta_layout} = {shape[:-1]}, got {tuple(rbeta.shape)}")


def _start(q, k, v, beta, rk, rv, rbeta, s0, r0, y0):
    """The reference's and the step path's start: the inputs in the accumulation dtype, and the state (S, R, y),
    zeros where not given."""
    B, _, H, Dk = q.shape
    Dv = v.shape[-1]
    dt = acc_dtype(q.dtype)
    xs = tuple(x.to(dt) for x in (q, k, v, beta, rk, rv, rbeta))
    S = xs[0].new_zeros(B, H, Dk, Dv) if s0 is None else s0.to(dt)
    R = xs[0].new_zeros(B, H, Dv, Dv) if r0 is None else r0.to(dt)
    y = xs[0].new_zeros(B, H, Dv) if y0 is None else y0.to(dt)
    return xs, S, R, y


def _delta_rnn_reference(q, k, v, beta, rk, rv, rbeta, s0, r0, y0, output_final_state):
    in_dtype, T = v.dtype, q.shape[1]
    (q, k, v, beta, rk, rv, rbeta), S, R, y = _start(q, k, v, beta, rk, rv, rbeta, s0, r0, y0)
    outs = []
    for t in range(T):
        kt = k[:, t]  # [B, H, Dk]
        u = beta[:, t, :, None] * (v[:, t] - torch.einsum("bhk,bhkv->bhv", kt, S))
        S = S + kt[..., :, None] * u[..., None, :]
        z = torch.einsum("bhk,bhkv->bhv", q[:, t], S)
        rkt = rk[:, t]  # [B, H, Dv]
        ur = rbeta[:, t, :, None] * (rv[:, t] - torch.einsum("bhi,bhij->bhj", rkt, R))
        R = R + rkt[..., :, None] * ur[..., None, :]
        y = z + torch.einsum("bhi,bhij->bhj", torch.softmax(y, dim=-1), R)
        outs.append(y)
    o = torch.stack(outs, dim=1).to(in_dtype)
    return o, ((S, R, y) if output_final_state else None)


def _delta_rnn_step(q, k, v, beta, rk, rv, rbeta, s0, r0, y0, output_final_state):
    """The reference's recurrence on the step path (:mod:`._step`): for generation's one-step calls."""
    in_dtype, T = v.dtype, q.shape[1]
    (q, k, v, beta, rk, rv, rbeta), S, R, y = _start(q, k, v, beta, rk, rv, rbeta, s0, r0, y0)
    outs = []
    for t in range(T):
        S = delta_write(S, k[:, t], v[:, t], beta[:, t])
        R = delta_write(R, rk[:, t], rv[:, t], rbeta[:, t])
        y = read(S, q[:, t]) + read(R, torch.softmax(y, dim=-1))
        outs.append(y)
    return stack_steps(outs).to(in_dtype), ((S, R, y) if output_final_state else None)


def _delta_rnn_fused(q, k, v, beta, rk, rv, rbeta, s0, r0, y0, output_final_state):
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    in_dtype = v.dtype
    dt = acc_dtype(q.dtype)
    q, k, v, beta = (x.to(dt) for x in (q, k, v, beta))
    z, S = delta_rule(q, k, v, beta, initial_state=None if s0 is None else s0.to(dt), output_final_state=True,
                      impl="fused")
    R0 = q.new_zeros(B, H, Dv, Dv) if r0 is None else r0.to(dt)
    Y0 = q.new_zeros(B, H, Dv) if y0 is None else y0.to(dt)
    Y, R = _DeltaRNNRecurrent.apply(z.contiguous(), *(x.to(dt).contiguous() for x in (rk, rv, rbeta, R0, Y0)))
    o = Y.to(in_dtype)
    return o, ((S, R, Y[:, -1]) if output_final_state else None)


class _DeltaRNNRecurrent(torch.autograd.Function):
    """``Y = z + (R-part)`` on contiguous ``[B, T, H, D]`` tensors; numba kernels, undo-the-update backward."""

    @staticmethod
    def forward(ctx, z, rk, rv, rb, R0, y0):
        Y = torch.empty_like(z)
        U = torch.empty_like(z)
        RT = torch.empty_like(R0)
        _numba.sync_threads()
        delta_rnn_fwd(*(_numba.np_view(x) for x in (z, rk, rv, rb, R0, y0)), Y.numpy(), U.numpy(), RT.numpy())
        ctx.save_for_backward(rk, rv, rb, U, Y, y0, RT)
        return Y, RT

    @staticmethod
    def backward(ctx, dY, dRT):
        rk, rv, rb, U, Y, y0, RT = ctx.saved_tensors
        dz, drk, drv = (torch.empty_like(x) for x in (Y, rk, rv))
        drb = torch.empty_like(rb)
        dR0 = torch.empty_like(RT)
        dy0 = torch.empty_like(y0)
        dY = dY.to(Y.dtype)
        dRT = dRT.to(Y.dtype)
        _numba.sync_threads()
        delta_rnn_bwd(*(_numba.np_view(x) for x in (rk, rv, rb, U, Y, y0, RT, dY, dRT)),
                      *(x.numpy() for x in (dz, drk, drv, drb, dR0, dy0)))
        return dz, drk, drv, drb, dR0, dy0
