"""The fused CPU paths of the chunkable ops (linear attention, the delta rule, the gated delta rule): numba kernels
over the (batch, head) pairs, one time step after another.

Linear attention (:mod:`fastweights.ops.linear_attention`), ``S_t = S_{t-1} + k_t v_t^T``, ``o_t = S_t^T q_t``,
keeps nothing but its inputs: its backward rebuilds ``S_{t-1} = S_t - k_t v_t^T``.

Per head, as in :mod:`fastweights.ops.delta_rule`: ``u_t = beta_t (v_t - S_{t-1}^T k_t)``, ``S_t = S_{t-1} + k_t
u_t^T``, ``o_t = S_t^T q_t``. The forward keeps only ``e_t = v_t - S_{t-1}^T k_t`` per step (O(T Dv) per head)
besides the inputs; the backward walks backwards in time and rebuilds ``S_{t-1} = S_t - k_t u_t^T`` by undoing
each rank-one write (as the recurrent ops' kernels here and the authors' CUDA kernels do), so no S_t is stored.

The gated delta rule (:mod:`fastweights.ops.gated_delta_rule`) decays the state first, ``S <- a_t S`` with
``a_t = exp(g_t)``; undoing that would divide by a_t, which may be 0. Its forward therefore keeps the state
entering every SEGMENT-th step, and its backward recomputes each segment's states from there (one extra forward
pass, a SEGMENT x Dk x Dv buffer per head being worked on) before walking the segment backwards.

On a CPU this is 2-4x faster than the chunkwise path at the shapes of results/speed/delta_rule_vs_sdpa.md: the
chunkwise algorithm trades a sequential loop for many small batched products, which pays on a GPU and not on a
few cores, where the step loop's O(Dk Dv) work per step stays in registers and cache.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch.autograd.function import once_differentiable

from . import _numba

# dot products in the inner loops: reassociation lets LLVM vectorise them; no 'nnan'/'ninf', so NaNs and
# infinities propagate as in the reference
_njit = numba.njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})


@_njit
def _forward_kernel(q, k, v, beta, S, o, es, zero):
    """S [B,H,Dk,Dv] holds S_0 on entry and S_T on exit. Writes o [B,T,H,Dv] and es [B,H,T,Dv] (e_t)."""
    B, T, H, Dk = q.shape
    Dv = v.shape[3]
    for bh in numba.prange(B * H):
        b = bh // H
        h = bh % H
        Sm = S[b, h]
        u = np.empty(Dv, q.dtype)
        for t in range(T):
            kt = k[b, t, h]
            qt = q[b, t, h]
            vt = v[b, t, h]
            bt = beta[b, t, h]
            e = es[b, h, t]
            for j in range(Dv):
                u[j] = zero
            for i in range(Dk):  # u <- S^T k
                ki = kt[i]
                for j in range(Dv):
                    u[j] += Sm[i, j] * ki
            for j in range(Dv):
                e[j] = vt[j] - u[j]
                u[j] = bt * e[j]
            ot = o[b, t, h]
            for j in range(Dv):
                ot[j] = zero
            for i in range(Dk):  # S += k u^T, o = S^T q, in one pass over S
                ki = kt[i]
                qi = qt[i]
                for j in range(Dv):
                    s = Sm[i, j] + ki * u[j]
                    Sm[i, j] = s
                    ot[j] += s * qi


@_njit
def _backward_kernel(do, q, k, beta, S, es, dS, dq, dk, dv, dbeta, zero):
    """S holds S_T on entry (rebuilt backwards to S_0); dS holds dL/dS_T on entry and dL/dS_0 on exit. Writes
    dq, dk [B,T,H,Dk], dv [B,T,H,Dv] and dbeta [B,T,H]."""
    B, T, H, Dk = q.shape
    Dv = do.shape[3]
    for bh in numba.prange(B * H):
        b = bh // H
        h = bh % H
        Sm = S[b, h]
        dSm = dS[b, h]
        u = np.empty(Dv, q.dtype)
        du = np.empty(Dv, q.dtype)
        for t in range(T - 1, -1, -1):
            qt = q[b, t, h]
            kt = k[b, t, h]
            gt = do[b, t, h]
            e = es[b, h, t]
            bt = beta[b, t, h]
            dqt = dq[b, t, h]
            dkt = dk[b, t, h]
            dvt = dv[b, t, h]
            for j in range(Dv):
                u[j] = bt * e[j]
                du[j] = zero
            # read o = S_t^T q: dS += q do^T, dq = S_t do. Write S_t = S_{t-1} + k u^T: du = dS^T k, dk = dS u.
            # Then undo the write: S <- S_t - k u^T = S_{t-1}.
            for i in range(Dk):
                qi = qt[i]
                ki = kt[i]
                aq = zero
                ak = zero
                for j in range(Dv):
                    d = dSm[i, j] + qi * gt[j]
                    dSm[i, j] = d
                    s = Sm[i, j]
                    aq += s * gt[j]
                    du[j] += d * ki
                    ak += d * u[j]
                    Sm[i, j] = s - ki * u[j]
                dqt[i] = aq
                dkt[i] = ak
            # u = beta (v - old), old = S_{t-1}^T k: dbeta = du . e, dv = beta du, d old = -dv
            db = zero
            for j in range(Dv):
                db += du[j] * e[j]
                dvt[j] = bt * du[j]
                du[j] = -dvt[j]
            dbeta[b, t, h] = db
            for i in range(Dk):  # old = S_{t-1}^T k: dS += k dold^T, dk += S_{t-1} dold
                ki = kt[i]
                a = zero
                for j in range(Dv):
                    dSm[i, j] += ki * du[j]
                    a += Sm[i, j] * du[j]
                dkt[i] += a


@_njit
def _linear_forward_kernel(q, k, v, S, o, zero):
    """S [B,H,Dk,Dv] holds S_0 on entry and S_T on exit. Writes o [B,T,H,Dv]."""
    B, T, H, Dk = q.shape
    Dv = v.shape[3]
    for bh in numba.prange(B * H):
        b = bh // H
        h = bh % H
        Sm = S[b, h]
        for t in range(T):
            kt = k[b, t, h]
            qt = q[b, t, h]
            vt = v[b, t, h]
            ot = o[b, t, h]
            for j in range(Dv):
                ot[j] = zero
            for i in range(Dk):  # S += k v^T, o = S^T q, in one pass over S
                ki = kt[i]
                qi = qt[i]
                for j in range(Dv):
                    s = Sm[i, j] + ki * vt[j]
                    Sm[i, j] = s
                    ot[j] += s * qi


@_njit
def _linear_backward_kernel(do, q, k, v, S, dS, dq, dk, dv, zero):
    """S holds S_T on entry (rebuilt backwards to S_0); dS holds dL/dS_T on entry and dL/dS_0 on exit."""
    B, T, H, Dk = q.shape
    Dv = v.shape[3]
    for bh in numba.prange(B * H):
        b = bh // H
        h = bh % H
        Sm = S[b, h]
        dSm = dS[b, h]
        for t in range(T - 1, -1, -1):
            kt = k[b, t, h]
            qt = q[b, t, h]
            vt = v[b, t, h]
            gt = do[b, t, h]
            dqt = dq[b, t, h]
            dkt = dk[b, t, h]
            dvt = dv[b, t, h]
            for j in range(Dv):
                dvt[j] = zero
            # read: dS += q do^T, dq = S_t do; write S_t = S_{t-1} + k v^T: dk = dS v, dv = dS^T k; then undo it
            for i in range(Dk):
                qi = qt[i]
                ki = kt[i]
                aq = zero
                ak = zero
                for j in range(Dv):
                    d = dSm[i, j] + qi * gt[j]
                    dSm[i, j] = d
                    s = Sm[i, j]
                    aq += s * gt[j]
                    ak += d * vt[j]
                    dvt[j] += d * ki
                    Sm[i, j] = s - ki * vt[j]
                dqt[i] = aq
                dkt[i] = ak


SEGMENT = 16  # steps between the gated forward's kept states


@_njit
def _gated_forward_kernel(q, k, v, beta, a, S, o, Sc, C, zero):
    """S holds S_0 on entry and S_T on exit. Writes o [B,T,H,Dv] and Sc [B,H,N,Dk,Dv], the state entering step
    n * C (before its decay), N = ceil(T / C)."""
    B, T, H, Dk = q.shape
    Dv = v.shape[3]
    for bh in numba.prange(B * H):
        b = bh // H
        h = bh % H
        Sm = S[b, h]
        u = np.empty(Dv, q.dtype)
        for t in range(T):
            if t % C == 0:
                Sc[b, h, t // C] = Sm
            at = a[b, t, h]
            kt = k[b, t, h]
            qt = q[b, t, h]
            vt = v[b, t, h]
            bt = beta[b, t, h]
            for j in range(Dv):
                u[j] = zero
            for i in range(Dk):  # decay, then u <- S^T k
                ki = kt[i]
                for j in range(Dv):
                    s = Sm[i, j] * at
                    Sm[i, j] = s
                    u[j] += s * ki
            for j in range(Dv):
                u[j] = bt * (vt[j] - u[j])
            ot = o[b, t, h]
            for j in range(Dv):
                ot[j] = zero
            for i in range(Dk):
                ki = kt[i]
                qi = qt[i]
                for j in range(Dv):
                    s = Sm[i, j] + ki * u[j]
                    Sm[i, j] = s
                    ot[j] += s * qi


@_njit
def _gated_backward_kernel(do, q, k, v, beta, a, Sc, C, dS, dq, dk, dv, dbeta, dg, zero):
    """dS holds dL/dS_T on entry and dL/dS_0 on exit. Writes dq, dk, dv, dbeta and dg (= a dL/da)."""
    B, T, H, Dk = q.shape
    Dv = do.shape[3]
    N = Sc.shape[2]
    for bh in numba.prange(B * H):
        b = bh // H
        h = bh % H
        dSm = dS[b, h]
        St = np.empty((C + 1, Dk, Dv), q.dtype)  # St[0]: the state entering the segment; St[i + 1]: S after its step i
        es = np.empty((C, Dv), q.dtype)
        u = np.empty(Dv, q.dtype)
        du = np.empty(Dv, q.dtype)
        for n in range(N - 1, -1, -1):
            t0 = n * C
            t1 = min(T, t0 + C)
            St[0] = Sc[b, h, n]
            for t in range(t0, t1):  # recompute the segment's states
                i0 = t - t0
                prev = St[i0]
                cur = St[i0 + 1]
                at = a[b, t, h]
                kt = k[b, t, h]
                vt = v[b, t, h]
                bt = beta[b, t, h]
                e = es[i0]
                for j in range(Dv):
                    u[j] = zero
                for i in range(Dk):
                    ki = kt[i]
                    for j in range(Dv):
                        s = prev[i, j] * at
                        cur[i, j] = s
                        u[j] += s * ki
                for j in range(Dv):
                    e[j] = vt[j] - u[j]
                    u[j] = bt * e[j]
                for i in range(Dk):
                    ki = kt[i]
                    for j in range(Dv):
                        cur[i, j] += ki * u[j]
            for t in range(t1 - 1, t0 - 1, -1):
                i0 = t - t0
                prev = St[i0]
                cur = St[i0 + 1]
                at = a[b, t, h]
                qt = q[b, t, h]
                kt = k[b, t, h]
                gt = do[b, t, h]
                bt = beta[b, t, h]
                e = es[i0]
                dqt = dq[b, t, h]
                dkt = dk[b, t, h]
                dvt = dv[b, t, h]
                for j in range(Dv):
                    u[j] = bt * e[j]
                    du[j] = zero
                # read o = S_t^T q and write S_t = a S_{t-1} + k u^T
                for i in range(Dk):
                    qi = qt[i]
                    ki = kt[i]
                    aq = zero
                    ak = zero
                    for j in range(Dv):
                        d = dSm[i, j] + qi * gt[j]
                        dSm[i, j] = d
                        aq += cur[i, j] * gt[j]
                        du[j] += d * ki
                        ak += d * u[j]
                    dqt[i] = aq
                    dkt[i] = ak
                db = zero
                for j in range(Dv):
                    db += du[j] * e[j]
                    dvt[j] = bt * du[j]
                    du[j] = -dvt[j]
                dbeta[b, t, h] = db
                # old = (a S_{t-1})^T k; then S_dec = a S_{t-1}: dS_{t-1} = a dS_dec, da = <dS_dec, S_{t-1}>
                da = zero
                for i in range(Dk):
                    ki = kt[i]
                    acc = zero
                    for j in range(Dv):
                        d = dSm[i, j] + ki * du[j]
                        p = prev[i, j]
                        acc += p * du[j]
                        da += d * p
                        dSm[i, j] = d * at
                    dkt[i] += acc * at
                dg[b, t, h] = da * at


def _zero(dtype):
    return np.float64(0) if dtype == torch.float64 else np.float32(0)


class FusedLinearAttention(torch.autograd.Function):
    """``(o [B,T,H,Dv], S_T [B,H,Dk,Dv]) = FusedLinearAttention.apply(q, k, v, S_0)``, all in one float dtype
    (float32 or float64) on the CPU."""

    @staticmethod
    def forward(ctx, q, k, v, s0):
        B, T, H, Dk = q.shape
        Dv = v.shape[-1]
        _numba.sync_threads()
        q, k, v = (x.contiguous() for x in (q, k, v))
        S = s0.clone(memory_format=torch.contiguous_format)
        o = q.new_empty(B, T, H, Dv)
        view = _numba.np_view
        _linear_forward_kernel(view(q), view(k), view(v), S.numpy(), o.numpy(), _zero(q.dtype))
        ctx.save_for_backward(q, k, v, S)
        ctx.set_materialize_grads(False)
        return o, S

    @staticmethod
    @once_differentiable
    def backward(ctx, do, dST):
        q, k, v, ST = ctx.saved_tensors
        B, T, H, Dk = q.shape
        Dv = v.shape[-1]
        _numba.sync_threads()
        do = q.new_zeros(B, T, H, Dv) if do is None else do.to(q.dtype).contiguous()
        dS = ST.new_zeros(B, H, Dk, Dv) if dST is None else dST.to(q.dtype).clone(memory_format=torch.contiguous_format)
        S = ST.clone()
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        view = _numba.np_view
        _linear_backward_kernel(view(do), view(q), view(k), view(v), S.numpy(), dS.numpy(), dq.numpy(), dk.numpy(),
                                dv.numpy(), _zero(q.dtype))
        return dq, dk, dv, (dS if ctx.needs_input_grad[3] else None)


class FusedGatedDeltaRule(torch.autograd.Function):
    """``(o, S_T) = FusedGatedDeltaRule.apply(q, k, v, beta, g, S_0)``: the gated delta rule, as
    :class:`FusedDeltaRule`."""

    @staticmethod
    def forward(ctx, q, k, v, beta, g, s0):
        B, T, H, Dk = q.shape
        Dv = v.shape[-1]
        _numba.sync_threads()
        q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
        a = g.exp()
        S = s0.clone(memory_format=torch.contiguous_format)
        o = q.new_empty(B, T, H, Dv)
        Sc = q.new_empty(B, H, -(-T // SEGMENT), Dk, Dv)
        view = _numba.np_view
        _gated_forward_kernel(view(q), view(k), view(v), view(beta), view(a), S.numpy(), o.numpy(), Sc.numpy(),
                              SEGMENT, _zero(q.dtype))
        ctx.save_for_backward(q, k, v, beta, a, Sc)
        ctx.set_materialize_grads(False)
        return o, S

    @staticmethod
    @once_differentiable
    def backward(ctx, do, dST):
        q, k, v, beta, a, Sc = ctx.saved_tensors
        B, T, H, Dk = q.shape
        Dv = v.shape[-1]
        _numba.sync_threads()
        do = q.new_zeros(B, T, H, Dv) if do is None else do.to(q.dtype).contiguous()
        dS = q.new_zeros(B, H, Dk, Dv) if dST is None else dST.to(q.dtype).clone(memory_format=torch.contiguous_format)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dbeta, dg = torch.empty_like(beta), torch.empty_like(beta)
        view = _numba.np_view
        _gated_backward_kernel(view(do), view(q), view(k), view(v), view(beta), view(a), view(Sc), SEGMENT, dS.numpy(),
                               dq.numpy(), dk.numpy(), dv.numpy(), dbeta.numpy(), dg.numpy(), _zero(q.dtype))
        return dq, dk, dv, dbeta, dg, (dS if ctx.needs_input_grad[5] else None)


class FusedDeltaRule(torch.autograd.Function):
    """``(o [B,T,H,Dv], S_T [B,H,Dk,Dv]) = FusedDeltaRule.apply(q, k, v, beta, S_0)``, all in one float dtype
    (float32 or float64) on the CPU."""

    @staticmethod
    def forward(ctx, q, k, v, beta, s0):
        B, T, H, Dk = q.shape
        Dv = v.shape[-1]
        _numba.sync_threads()
        q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
        S = s0.clone(memory_format=torch.contiguous_format)
        o = q.new_empty(B, T, H, Dv)
        es = q.new_empty(B, H, T, Dv)
        view = _numba.np_view
        _forward_kernel(view(q), view(k), view(v), view(beta), S.numpy(), o.numpy(), es.numpy(), _zero(q.dtype))
        ctx.save_for_backward(q, k, beta, S, es)
        ctx.set_materialize_grads(False)
        return o, S

    @staticmethod
    @once_differentiable
    def backward(ctx, do, dST):
        q, k, beta, ST, es = ctx.saved_tensors
        B, T, H, Dk = q.shape
        Dv = es.shape[-1]
        _numba.sync_threads()
        do = q.new_zeros(B, T, H, Dv) if do is None else do.to(q.dtype).contiguous()
        dS = ST.new_zeros(B, H, Dk, Dv) if dST is None else dST.to(q.dtype).clone(memory_format=torch.contiguous_format)
        S = ST.clone()
        dq, dk = torch.empty_like(q), torch.empty_like(k)
        dv = q.new_empty(B, T, H, Dv)
        dbeta = torch.empty_like(beta)
        view = _numba.np_view
        _backward_kernel(view(do), view(q), view(k), view(beta), S.numpy(), view(es), dS.numpy(), dq.numpy(),
                         dk.numpy(), dv.numpy(), dbeta.numpy(), _zero(q.dtype))
        return dq, dk, dv, dbeta, (dS if ctx.needs_input_grad[4] else None)
