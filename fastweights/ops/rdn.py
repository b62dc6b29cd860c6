"""The Recurrent Delta Net (RDN) recurrence: a delta-rule fast weight whose slow net is recurrent
through the previous output (Irie et al. 2021, "Going Beyond Linear Transformers with Recurrent Fast
Weight Programmers"). Per head, with ``h = tanh(y_{t-1})`` and ``(h R)_j = sum_i h_i R_ij``:

    q_t = softmax(xq_t + h Rq)          k_t = softmax(xk_t + h Rk)       (over the head dim)
    v_t = xv_t + h Rv                    beta_t = sigmoid(xbeta_t + h . rbeta)
    u_t = beta_t (v_t - S_{t-1}^T k_t)
    S_t = S_{t-1} + k_t u_t^T
    y_t = S_t^T q_t                       (write, then read; y_t is the output and feeds step t+1)

``xq, xk, xv, xbeta`` are the slow net's feedforward pre-activations (``W x_t``), ``Rq, Rk, Rv, rbeta``
its recurrent weights (shared over the batch). The state is ``(S, y)``, zero by default.

Three paths:
  * ``reference``: a step loop, autograd through it (batched over B and H).
  * ``step``: the same step loop, lean (:mod:`fastweights.ops._step`); ``auto`` takes it for a few steps off
    the CPU (on the CPU the fused kernel's one-step call is faster).
  * ``fused``: numba CPU kernels (prange over the B*H heads) inside a ``torch.autograd.Function``.
    The forward keeps only per-step vectors (q_t, k_t, e_t = v_t - S_{t-1}^T k_t, beta_t, h_t = tanh(y_{t-1})
    and y_t, which is the output): O(T*D) per head. The backward walks backwards in time and rebuilds S_{t-1}
    from S_t by undoing the rank-one update (S_{t-1} = S_t - k_t u_t^T), as the authors' CUDA kernels do,
    so no S_t is ever stored. The gradients of the recurrent weights, sums over (b, t) of h_t times the
    pre-activations' gradients, are one matrix product per head in torch after the backward kernel.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch.autograd.function import once_differentiable

from . import _numba
from ._step import delta_write, read, stack_steps
from ._utils import (acc_dtype, autocast_float32, check_dtypes_and_device, check_qkv, check_tensor, empty_result,
                     resolve_impl, unpack_state)

__all__ = ["recurrent_delta_rule"]


@autocast_float32
def recurrent_delta_rule(xq, xk, xv, xbeta, Rq, Rk, Rv, rbeta, *, initial_state=None,
                         output_final_state=False, impl="auto"):
    """Recurrent Delta Net fast weights.

    Args:
        xq, xk, xv: ``[B, T, H, D]`` feedforward pre-activations of query, key and value.
        xbeta: ``[B, T, H]`` feedforward pre-activation of the learning rate (sigmoid applied here).
        Rq, Rk, Rv: ``[H, D, D]`` recurrent weights, applied as ``tanh(y_{t-1}) @ R``.
        rbeta: ``[H, D]`` recurrent weight of the learning rate.
        initial_state: None, or a tuple ``(S_0 [B, H, D, D], y_0 [B, H, D])``; either entry may be None
            (= zeros).
        output_final_state: also return ``(S_T, y_T)``.
        impl: ``"auto"`` (``"fused"`` on CPU; elsewhere ``"step"`` for at most ``_step.STEP_MAX_T`` steps, else
            ``"reference"``), ``"fused"``, ``"step"`` or ``"reference"``.

    Returns:
        ``(y, final_state)``: y is ``[B, T, H, D]`` in the input dtype; final_state is None or
        ``(S_T, y_T)`` in float32 (float64 for float64 inputs).
    """
    B, T, H, D, Dv = check_qkv(xq, xk, xv, xbeta, prefix="x")
    if Dv != D:
        raise ValueError(f"xv must have the same head size as xq and xk (the state is D x D), "
                         f"got xv {tuple(xv.shape)} and xq {tuple(xq.shape)}")
    for name, w in (("Rq", Rq), ("Rk", Rk), ("Rv", Rv)):
        check_tensor(name, w, 3, "[H, D, D]")
        if tuple(w.shape) != (H, D, D):
            raise ValueError(f"{name} must have shape [H, D, D] = {(H, D, D)}, got {tuple(w.shape)}")
    check_tensor("rbeta", rbeta, 2, "[H, D]")
    if tuple(rbeta.shape) != (H, D):
        raise ValueError(f"rbeta must have shape [H, D] = {(H, D)}, got {tuple(rbeta.shape)}")
    s0, y0 = unpack_state(initial_state, ["S", "y"], [(B, H, D, D), (B, H, D)])
    named = [("xq", xq), ("xk", xk), ("xv", xv), ("xbeta", xbeta), ("Rq", Rq), ("Rk", Rk), ("Rv", Rv),
             ("rbeta", rbeta)]
    in_dtype = check_dtypes_and_device(named[:4], [*named[4:], ("initial_state.S", s0), ("initial_state.y", y0)])
    # a one-step call of the fused kernel (it allocates little) took 180 us against the step path's 250 us (B=1,
    # H=4, D=32, AMD EPYC, 1 thread, interleaved): on CPU it stays the choice for few steps too
    fn = resolve_impl("recurrent_delta_rule", impl, {"reference": _rdn_reference, "fused": _rdn_fused,
                                                     "step": _rdn_step}, ["fused"], xq.device, steps=T,
                      few_steps_order=("fused", "step"))
    if B == 0 or T == 0:
        o, final = empty_result([x for _, x in named] + [s0, y0], (B, T, H, D), in_dtype, [s0, y0],
                                [(B, H, D, D), (B, H, D)])
        return o, (final if output_final_state else None)
    dt = acc_dtype(in_dtype)
    xs = [None if x is None else x.to(dt) for x in [*(x for _, x in named), s0, y0]]
    y, state = fn(*xs, output_final_state)
    return y.to(in_dtype), state


# ----------------------------------------------------------------------------------------------------
# reference


def _rdn_reference(xq, xk, xv, xb, Rq, Rk, Rv, rb, s0, y0, output_final_state):
    B, T, H, D = xq.shape
    W = torch.cat([Rq, Rk, Rv, rb[..., None]], dim=-1)  # [H, D, 3D+1]: all recurrent weights at once
    S = xq.new_zeros(B, H, D, D) if s0 is None else s0
    y = xq.new_zeros(B, H, D) if y0 is None else y0
    outs = []
    for t in range(T):
        r = torch.einsum("bhi,hij->bhj", torch.tanh(y), W)  # [B, H, 3D+1]
        q = torch.softmax(xq[:, t] + r[..., :D], dim=-1)
        k = torch.softmax(xk[:, t] + r[..., D:2 * D], dim=-1)
        v = xv[:, t] + r[..., 2 * D:3 * D]
        beta = torch.sigmoid(xb[:, t] + r[..., 3 * D])
        old = torch.einsum("bhk,bhkv->bhv", k, S)
        u = beta[..., None] * (v - old)
        S = S + k[..., :, None] * u[..., None, :]
        y = torch.einsum("bhk,bhkv->bhv", q, S)
        outs.append(y)
    return torch.stack(outs, dim=1), ((S, y) if output_final_state else None)


def _rdn_step(xq, xk, xv, xb, Rq, Rk, Rv, rb, s0, y0, output_final_state):
    """The reference's recurrence on the step path (:mod:`._step`): for generation's one-step calls."""
    B, T, H, D = xq.shape
    W = torch.cat([Rq, Rk, Rv, rb[..., None]], dim=-1)  # [H, D, 3D+1]
    S = xq.new_zeros(B, H, D, D) if s0 is None else s0
    y = xq.new_zeros(B, H, D) if y0 is None else y0
    outs = []
    for t in range(T):
        r = read(W, torch.tanh(y))  # [B, H, 3D+1]
        q = torch.softmax(xq[:, t] + r[..., :D], dim=-1)
        k = torch.softmax(xk[:, t] + r[..., D:2 * D], dim=-1)
        S = delta_write(S, k, xv[:, t] + r[..., 2 * D:3 * D], torch.sigmoid(xb[:, t] + r[..., 3 * D]))
        y = read(S, q)
        outs.append(y)
    return stack_steps(outs), ((S, y) if output_final_state else None)


# ----------------------------------------------------------------------------------------------------
# fused (numba)

# The inner loops contain dot products; letting LLVM reassociate them lets it vectorise them. No
# 'nnan'/'ninf', so NaNs and infinities still propagate as in the reference.
_njit = numba.njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})


@numba.njit(cache=True, nogil=True, inline="always")
def _tanh(x, one):
    """tanh(x) as sign(x) (1 - z) / (1 + z) with z = exp(-2|x|) <= 1 (nothing overflows; NaN stays NaN).
    Its absolute error is that of libm's tanh (under an ulp of 1; the relative error of tiny results is
    larger, but h = tanh(y) only enters sums with terms of order one), and it costs one exp: about 3.5 ns
    against 21 ns for numba's math.tanh in float32, which the forward calls D times per step."""
    z = math.exp(-(one + one) * abs(x))
    t = (one - z) / (one + z)
    return t if x >= 0 else -t


@_njit
def _rdn_fwd_kernel(xq, xk, xv, xb, Rq, Rk, Rv, rb, S, y0, y, hs, qs, ks, es, bs, zero, one):
    """Forward. S [B,H,D,D] holds S_0 on entry and S_T on exit. Writes y [B,T,H,D], hs [B,T,H,D]
    (tanh(y_{t-1}), the slow net's recurrent input at step t, which the backward needs) and the per-step
    vectors qs, ks, es [B,H,T,D] (e = v - S_{t-1}^T k) and bs [B,H,T] (beta)."""
    B, T, H, D = xq.shape
    for bh in numba.prange(B * H):
        b = bh // H
        hh = bh % H
        Sm = S[b, hh]
        Rqh = Rq[hh]
        Rkh = Rk[hh]
        Rvh = Rv[hh]
        rbh = rb[hh]
        pq = np.empty(D, xq.dtype)
        pk = np.empty(D, xq.dtype)
        pv = np.empty(D, xq.dtype)
        old = np.empty(D, xq.dtype)
        hv = hs[b, 0, hh]
        for i in range(D):
            hv[i] = _tanh(y0[b, hh, i], one)
        for t in range(T):
            # slow net: pre-activations = feedforward part + tanh(y_{t-1}) @ R
            for j in range(D):
                pq[j] = xq[b, t, hh, j]
                pk[j] = xk[b, t, hh, j]
                pv[j] = xv[b, t, hh, j]
            pb = xb[b, t, hh]
            for i in range(D):
                hi = hv[i]
                pb += hi * rbh[i]
                for j in range(D):
                    pq[j] += hi * Rqh[i, j]
                    pk[j] += hi * Rkh[i, j]
                    pv[j] += hi * Rvh[i, j]
            q = qs[b, hh, t]
            k = ks[b, hh, t]
            e = es[b, hh, t]
            # softmaxes over the head dim
            mq = pq[0]
            mk = pk[0]
            for j in range(1, D):
                mq = max(mq, pq[j])
                mk = max(mk, pk[j])
            sq = zero
            sk = zero
            for j in range(D):
                a = math.exp(pq[j] - mq)
                c = math.exp(pk[j] - mk)
                q[j] = a
                k[j] = c
                sq += a
                sk += c
            iq = one / sq
            ik = one / sk
            for j in range(D):
                q[j] *= iq
                k[j] *= ik
            if pb >= 0:
                bs[b, hh, t] = one / (one + math.exp(-pb))
            else:
                z = math.exp(pb)
                bs[b, hh, t] = z / (one + z)
            beta = bs[b, hh, t]
            # delta rule: u = beta (v - S^T k); S += k u^T; y = S^T q
            for j in range(D):
                old[j] = zero
            for i in range(D):
                ki = k[i]
                for j in range(D):
                    old[j] += Sm[i, j] * ki
            for j in range(D):
                e[j] = pv[j] - old[j]
                old[j] = beta * e[j]  # old now holds u
            yt = y[b, t, hh]
            for j in range(D):
                yt[j] = zero
            for i in range(D):
                ki = k[i]
                qi = q[i]
                for j in range(D):
                    s = Sm[i, j] + ki * old[j]
                    Sm[i, j] = s
                    yt[j] += s * qi
            if t + 1 < T:
                hv = hs[b, t + 1, hh]
                for i in range(D):
                    hv[i] = _tanh(yt[i], one)


@_njit
def _rdn_bwd_kernel(dy, Rq, Rk, Rv, rb, S, hs, qs, ks, es, bs, dS, gy0, dxq, dxk, dxv, dxb, zero, one):
    """Backward. hs [B,T,H,D] is tanh(y_{t-1}) (the slow net's recurrent input at step t).
    S [B,H,D,D] holds S_T on entry (it is rebuilt backwards to S_0). dS holds dL/dS_T on
    entry and dL/dS_0 on exit; gy0 [B,H,D] holds dL/dy_T on entry and dL/dy_0 on exit. Writes the
    pre-activations' gradients dxq, dxk, dxv [B,T,H,D] and dxb [B,T,H]."""
    B, T, H, D = dy.shape
    for bh in numba.prange(B * H):
        b = bh // H
        hh = bh % H
        Sm = S[b, hh]
        dSm = dS[b, hh]
        g = gy0[b, hh]
        Rqh = Rq[hh]
        Rkh = Rk[hh]
        Rvh = Rv[hh]
        rbh = rb[hh]
        gy = np.empty(D, dy.dtype)
        u = np.empty(D, dy.dtype)
        du = np.empty(D, dy.dtype)
        dq = np.empty(D, dy.dtype)
        dk = np.empty(D, dy.dtype)
        dv = np.empty(D, dy.dtype)
        for t in range(T - 1, -1, -1):
            q = qs[b, hh, t]
            k = ks[b, hh, t]
            e = es[b, hh, t]
            beta = bs[b, hh, t]
            for j in range(D):
                gy[j] = dy[b, t, hh, j] + g[j]
                u[j] = beta * e[j]
                du[j] = zero
            # read y = S_t^T q: dS += q gy^T, dq = S_t gy. Write S_t = S_{t-1} + k u^T: du = dS^T k,
            # dk = dS u. Then undo the write: S <- S_t - k u^T = S_{t-1}.
            for i in range(D):
                qi = q[i]
                ki = k[i]
                aq = zero
                ak = zero
                for j in range(D):
                    d = dSm[i, j] + qi * gy[j]
                    dSm[i, j] = d
                    s = Sm[i, j]
                    aq += s * gy[j]
                    du[j] += d * ki
                    ak += d * u[j]
                    Sm[i, j] = s - ki * u[j]
                dq[i] = aq
                dk[i] = ak
            # u = beta (v - old), old = S_{t-1}^T k
            dbeta = zero
            for j in range(D):
                dbeta += du[j] * e[j]
                dv[j] = beta * du[j]
                du[j] = -dv[j]  # du now holds d old
            for i in range(D):
                ki = k[i]
                a = zero
                for j in range(D):
                    dSm[i, j] += ki * du[j]
                    a += Sm[i, j] * du[j]
                dk[i] += a
            # softmax / sigmoid backward -> pre-activation grads (written straight into dx*)
            cq = zero
            ck = zero
            for j in range(D):
                cq += q[j] * dq[j]
                ck += k[j] * dk[j]
            pq = dxq[b, t, hh]
            pk = dxk[b, t, hh]
            pv = dxv[b, t, hh]
            for j in range(D):
                pq[j] = q[j] * (dq[j] - cq)
                pk[j] = k[j] * (dk[j] - ck)
                pv[j] = dv[j]
            pb = dbeta * beta * (one - beta)
            dxb[b, t, hh] = pb
            # slow net: pre = x + h R with h = tanh(y_{t-1})
            hv = hs[b, t, hh]
            # (the recurrent weights' gradients, sum_t h_t dx_t^T, are one matrix product per head after the
            # kernel, from the stored h and dx: not D^2 axpys per step here)
            for i in range(D):
                hi = hv[i]
                a = rbh[i] * pb
                for j in range(D):
                    a += Rqh[i, j] * pq[j] + Rkh[i, j] * pk[j] + Rvh[i, j] * pv[j]
                g[i] = a * (one - hi * hi)  # carried to step t-1 as dL/dy_{t-1}


def _scalars(dtype):
    npdt = np.float64 if dtype == torch.float64 else np.float32
    return npdt(0), npdt(1)


class _FusedRDN(torch.autograd.Function):
    """All tensors in one float dtype (float32 or float64); s0/y0 may be zeros that need no grad."""

    @staticmethod
    def forward(ctx, xq, xk, xv, xb, Rq, Rk, Rv, rb, s0, y0):
        B, T, H, D = xq.shape
        dt = xq.dtype
        _numba.sync_threads()
        Rq, Rk, Rv, rb = (w.contiguous() for w in (Rq, Rk, Rv, rb))
        y0 = y0.contiguous()
        S = s0.clone(memory_format=torch.contiguous_format)
        y = xq.new_empty(B, T, H, D)
        hs = xq.new_empty(B, T, H, D)
        qs = xq.new_empty(B, H, T, D)
        ks = xq.new_empty(B, H, T, D)
        es = xq.new_empty(B, H, T, D)
        bs = xq.new_empty(B, H, T)
        v = _numba.np_view
        _rdn_fwd_kernel(v(xq), v(xk), v(xv), v(xb), v(Rq), v(Rk), v(Rv), v(rb), S.numpy(), v(y0),
                        y.numpy(), hs.numpy(), qs.numpy(), ks.numpy(), es.numpy(), bs.numpy(), *_scalars(dt))
        yT = y[:, -1].clone()
        ctx.save_for_backward(Rq, Rk, Rv, rb, S, y0, y, hs, qs, ks, es, bs)
        ctx.set_materialize_grads(False)
        return y, S, yT

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dST, dyT):
        Rq, Rk, Rv, rb, ST, y0, y, hs, qs, ks, es, bs = ctx.saved_tensors
        B, T, H, D = y.shape
        dt = y.dtype
        _numba.sync_threads()
        dy = y.new_zeros(B, T, H, D) if dy is None else dy.to(dt).contiguous()
        dS = ST.new_zeros(B, H, D, D) if dST is None else dST.to(dt).clone(memory_format=torch.contiguous_format)
        gy0 = y0.new_zeros(B, H, D) if dyT is None else dyT.to(dt).clone(memory_format=torch.contiguous_format)
        S = ST.clone()
        dxq = y.new_empty(B, T, H, D)
        dxk = y.new_empty(B, T, H, D)
        dxv = y.new_empty(B, T, H, D)
        dxb = y.new_empty(B, T, H)
        v = _numba.np_view
        _rdn_bwd_kernel(v(dy), v(Rq), v(Rk), v(Rv), v(rb), S.numpy(), hs.numpy(), v(qs), v(ks), v(es),
                        v(bs), dS.numpy(), gy0.numpy(), dxq.numpy(), dxk.numpy(), dxv.numpy(), dxb.numpy(),
                        *_scalars(dt))
        # pre = x + h R, so dR[h] = sum over (b, t) of h_t dpre_t^T: per head, [D, B*T] @ [B*T, D] (strided views,
        # no copies)
        h2 = hs.view(B * T, H, D)
        dR = [torch.stack([torch.mm(h2[:, i].t(), dx.view(B * T, H, D)[:, i]) for i in range(H)])
              for dx in (dxq, dxk, dxv)]
        drb = torch.einsum("nhi,nh->hi", h2, dxb.view(B * T, H))
        need = ctx.needs_input_grad
        return (dxq, dxk, dxv, dxb, *dR, drb, dS if need[8] else None, gy0 if need[9] else None)


def _rdn_fused(xq, xk, xv, xb, Rq, Rk, Rv, rb, s0, y0, output_final_state):
    B, T, H, D = xq.shape
    if s0 is None:
        s0 = xq.new_zeros(B, H, D, D)
    if y0 is None:
        y0 = xq.new_zeros(B, H, D)
    y, S, yT = _FusedRDN.apply(xq, xk, xv, xb, Rq, Rk, Rv, rb, s0, y0)
    return y, ((S, yT) if output_final_state else None)
