"""The modern self-referential weight matrix (SRWM; Irie, Schlag, Csordás, Schmidhuber, ICML 2022, "A Modern
Self-Referential Weight Matrix That Learns to Modify Itself"). Per head, four matrices in [in, out] layout,
``W_y, W_q, W_k`` (``D x D``) and ``w_b`` (``D x 4``), map the input to its output, a query, a key and four
learning rates, read from the matrices of the previous step:

    y_t = W_y^T x_t     q_t = softmax(W_q^T x_t)     k_t = softmax(W_k^T x_t)     b_t = sigmoid(w_b^T x_t)

then every matrix rewrites itself with the key and query it produced (Z in (W_y, W_q, W_k, w_b), rate
b_t[0..3] in that order):

    Z_t = Z_{t-1} + k_t (b_t[i] (Z_{t-1}^T q_t - Z_{t-1}^T k_t))^T

The output is read before the update (as in the authors' ``self_ref_v0`` kernels), unlike the other ops,
which write then read.

The state. The four matrices given as arguments are where the recurrence starts: the SRWM's slow weights,
which learning trains through the gradient into them. The op's state is the *change* from them: the
recurrence starts from ``Z_0 = Z + initial_state.Z`` and the final state is ``Z_T - Z`` (Z the argument).
So ``initial_state=None`` (all zeros) starts from the given matrices, as every op's zero state is a
fresh start, and a final state passed back with the same matrices continues the sequence; this is also
how the authors' layer carries its state ("the shift from the base weights"). The matrices themselves
at step T are ``Z + final_state.Z``.

Three paths:
  * ``reference``: the step loop of the equations above, autograd through it.
  * ``step``: the same step loop, lean (:mod:`fastweights.ops._step`); ``auto`` takes it for a few steps off
    the CPU (on the CPU the fused kernel's one-step call is faster).
  * ``fused`` (CPU): numba kernels (:mod:`._srwm_numba`: ``prange`` over batch x head, sequential over
    time) in a ``torch.autograd.Function``. The forward stores per-step vectors only; the backward rebuilds
    each step's matrices by undoing the rank-one update, resynchronising to a stored copy every 64 steps,
    so memory is O(T D + T D^2 / 64) per head rather than the reference's O(T D^2).
"""

from __future__ import annotations

import torch

from . import _numba
from ._srwm_numba import CHECKPOINT, srwm_bwd, srwm_fwd
from ._step import read, stack_steps
from ._utils import (acc_dtype, autocast_float32, check_dtypes_and_device, check_tensor, empty_result, resolve_impl,
                     unpack_state)

__all__ = ["srwm"]

STATE_NAMES = ("W_y", "W_q", "W_k", "w_b")
NUM_RATES = 4  # one learning rate per matrix


@autocast_float32
def srwm(x, W_y, W_q, W_k, w_b, *, initial_state=None, output_final_state=False, impl="auto"):
    """Self-referential weight matrix, one per head.

    Args:
        x: ``[B, T, H, D]`` inputs.
        W_y, W_q, W_k: ``[B, H, D, D]`` (or ``[1, H, D, D]``, shared over the batch) the initial matrices in
            [in, out] layout: ``y_t = W_y^T x_t``.
        w_b: ``[B, H, D, 4]`` (or ``[1, H, D, 4]``) the initial learning-rate matrix.
        initial_state: None (start from the given matrices) or a tuple of their changes
            ``(W_y [B, H, D, D], W_q, W_k, w_b [B, H, D, 4])``; an entry may be None (= zeros).
        output_final_state: also return the changes at step T, ``Z_T - Z`` for each matrix Z.
        impl: ``"auto"`` (``"fused"`` on CPU; elsewhere ``"step"`` for at most ``_step.STEP_MAX_T`` steps, else
            ``"reference"``), ``"fused"``, ``"step"`` or ``"reference"``.

    Returns:
        ``(y, final_state)``: y is ``[B, T, H, D]`` in the input dtype; final_state is None or the tuple
        ``(W_y, W_q, W_k, w_b)`` of changes, in float32 (float64 for float64 inputs).
    """
    check_tensor("x", x, 4, "[B, T, H, D]")
    B, T, H, D = x.shape
    matrices = {"W_y": W_y, "W_q": W_q, "W_k": W_k, "w_b": w_b}
    for name, Z in matrices.items():
        cols = NUM_RATES if name == "w_b" else D
        check_tensor(name, Z, 4, f"[B, H, D, {'4' if name == 'w_b' else 'D'}]")
        if Z.shape[0] not in (1, B) or tuple(Z.shape[1:]) != (H, D, cols):
            raise ValueError(f"{name} must have shape [B or 1, H, D, {cols}] = [{B} or 1, {H}, {D}, {cols}] "
                             f"for x of shape {tuple(x.shape)}, got {tuple(Z.shape)}")
    shapes = [(B, H, D, D)] * 3 + [(B, H, D, NUM_RATES)]
    state0 = unpack_state(initial_state, STATE_NAMES, shapes)
    check_dtypes_and_device([("x", x)], [*matrices.items(), *(
        (f"initial_state.{n}", s) for n, s in zip(STATE_NAMES, state0))])
    # a one-step call of the fused kernel took 200 us against the step path's 280 us (B=1, H=4, D=32, AMD EPYC,
    # 1 thread, interleaved): on CPU it stays the choice for few steps too
    fn = resolve_impl("srwm", impl, {"reference": _srwm_reference, "fused": _srwm_fused, "step": _srwm_step},
                      ["fused"], x.device, steps=T, few_steps_order=("fused", "step"))
    if B == 0 or T == 0:
        o, final = empty_result([x, W_y, W_q, W_k, w_b, *state0], (B, T, H, D), x.dtype, state0, shapes)
        return o, (final if output_final_state else None)
    return fn(x, W_y, W_q, W_k, w_b, state0, output_final_state)


def _starts(x, W_y, W_q, W_k, w_b, state0):
    """The given matrices over the batch (in the accumulation dtype) and where the recurrence starts."""
    B = x.shape[0]
    dt = acc_dtype(x.dtype)
    base = [Z.to(dt).expand(B, *Z.shape[1:]) for Z in (W_y, W_q, W_k, w_b)]
    start = [Z if s is None else Z + s.to(dt) for Z, s in zip(base, state0)]
    return base, start


def _srwm_reference(x, W_y, W_q, W_k, w_b, state0, output_final_state):
    base, Z = _starts(x, W_y, W_q, W_k, w_b, state0)
    xs = x.to(base[0].dtype)

    def read(M, v):  # M^T v per (batch, head): M [B, H, D, C], v [B, H, D] -> [B, H, C]
        return torch.einsum("bhi,bhic->bhc", v, M)

    ys = []
    for t in range(x.shape[1]):
        xt = xs[:, t]  # [B, H, D]
        ys.append(read(Z[0], xt))
        q = torch.softmax(read(Z[1], xt), dim=-1)
        k = torch.softmax(read(Z[2], xt), dim=-1)
        b = torch.sigmoid(read(Z[3], xt))  # [B, H, 4]
        Z = [M + k[..., :, None] * (b[..., i, None] * (read(M, q) - read(M, k)))[..., None, :]
             for i, M in enumerate(Z)]
    y = torch.stack(ys, dim=1).to(x.dtype)
    return y, (tuple(M - Z0 for M, Z0 in zip(Z, base)) if output_final_state else None)


def _srwm_step(x, W_y, W_q, W_k, w_b, state0, output_final_state):
    """The reference's recurrence on the step path (:mod:`._step`), with the four matrices side by side as one
    ``[B, H, D, 3D + 4]`` matrix (as the fused path keeps them): one read gives y, q, k and the rates, one read of
    [q; k] both differences, and one outer product updates every column with its own matrix's rate."""
    base, start = _starts(x, W_y, W_q, W_k, w_b, state0)
    D = x.shape[-1]
    M = torch.cat(start, dim=-1)
    xs = x.to(M.dtype)
    col = torch.arange(3 * D + NUM_RATES, device=x.device).div_(D, rounding_mode="floor").clamp_(max=NUM_RATES - 1)
    ys = []
    for t in range(x.shape[1]):
        r = read(M, xs[:, t])  # [B, H, 3D + 4]: y, q, k and the rates' pre-activations, from the matrices at t-1
        ys.append(r[..., :D])
        q = torch.softmax(r[..., D:2 * D], dim=-1)
        k = torch.softmax(r[..., 2 * D:3 * D], dim=-1)
        b = torch.sigmoid(r[..., 3 * D:])  # [B, H, 4]
        qk = torch.stack([q, k], dim=-2) @ M  # [B, H, 2, 3D + 4]: M^T q and M^T k
        M = M + k[..., :, None] * (b[..., col] * (qk[..., 0, :] - qk[..., 1, :]))[..., None, :]
    y = stack_steps(ys).to(x.dtype)
    if not output_final_state:
        return y, None
    final = (M - torch.cat(base, dim=-1)).split([D, D, D, NUM_RATES], dim=-1)
    return y, tuple(s.contiguous() for s in final)


def _srwm_fused(x, W_y, W_q, W_k, w_b, state0, output_final_state):
    base, start = _starts(x, W_y, W_q, W_k, w_b, state0)
    D = x.shape[-1]
    M0 = torch.cat(start, dim=-1)  # [B, H, D, 3D + 4]: the four matrices side by side
    Y, MT = _SRWMFused.apply(x.to(M0.dtype).contiguous(), M0.contiguous())
    if not output_final_state:
        return Y.to(x.dtype), None
    final = (MT - torch.cat(base, dim=-1)).split([D, D, D, NUM_RATES], dim=-1)
    return Y.to(x.dtype), tuple(s.contiguous() for s in final)


class _SRWMFused(torch.autograd.Function):
    """``(Y, M_T) = SRWM(x, M_0)`` on contiguous tensors: x ``[B, T, H, D]``, M ``[B, H, D, 3D + 4]``."""

    @staticmethod
    def forward(ctx, x, M0):
        B, T, H, D = x.shape
        N = M0.shape[-1]
        Y, Q, K = (torch.empty_like(x) for _ in range(3))
        Bt = x.new_empty(B, T, H, NUM_RATES)
        Dd = x.new_empty(B, T, H, N)
        MT = torch.empty_like(M0)
        Ms = x.new_empty(B, H, -(-T // CHECKPOINT), D, N)
        _numba.sync_threads()
        srwm_fwd(_numba.np_view(x), _numba.np_view(M0), *(t.numpy() for t in (Y, Q, K, Bt, Dd, MT, Ms)))
        ctx.save_for_backward(x, Q, K, Bt, Dd, MT, Ms)
        return Y, MT

    @staticmethod
    def backward(ctx, dY, dMT):
        x, Q, K, Bt, Dd, MT, Ms = ctx.saved_tensors
        dx = torch.empty_like(x)
        dM0 = torch.empty_like(MT)
        _numba.sync_threads()
        srwm_bwd(*(_numba.np_view(t) for t in (x, Q, K, Bt, Dd, MT, Ms, dY.to(x.dtype), dMT.to(x.dtype))),
                 dx.numpy(), dM0.numpy())
        return dx, dM0
