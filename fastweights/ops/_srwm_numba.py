"""Fused CPU step kernels (numba) for the self-referential weight matrix (:mod:`fastweights.ops.srwm`).

Per head, the four matrices are kept side by side as one ``D x N`` matrix ``M = [W_y | W_q | W_k | w_b]``
(``N = 3D + 4``; rows are the input index, as in the op's [in, out] layout). One step, from M = M_{t-1}:

    a = M^T x_t                          y_t = a[:D]           (the output, read before the update)
    q = softmax(a[D:2D])   k = softmax(a[2D:3D])   b = sigmoid(a[3D:])
    d = M^T (q - k)                      (each matrix's own ``Z^T q - Z^T k``, all at once)
    u = r * d                            (r: column n of block i gets the rate b[i])
    M_t = M + k u^T                      (every matrix rewrites itself)

The forward kernel stores only per-step vectors (q, k, b and d) and the final M, never the matrices M_t.
The backward kernel runs backwards in time and rebuilds ``M_{t-1} = M_t - k u^T`` by undoing the
rank-one update with the stored u (as the authors' CUDA kernels do). The undo subtracts exactly what the
forward added, so its rounding error grows additively (about T eps |k| |u|, never multiplied by the
inverse of the update); every ``CHECKPOINT`` steps the forward also stores M and the backward resets the
rebuilt matrix to it, so the error stays that of at most ``CHECKPOINT`` undone steps however long T is.

Arrays must be C-contiguous and of one float dtype (float32 or float64; numba specialises on first use).
Everything here lives in one module so that numba's on-disk cache is invalidated together.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._numba import njit, prange
from ._recurrent_read import _copy, _softmax  # the recurrent FWPs' serial helpers, shared

CHECKPOINT = 64  # steps between the stored matrices the backward resynchronises to

njit_serial = numba.njit(cache=True, fastmath=False, nogil=True)
# Only the loops over D and N: letting LLVM reassociate the sums (no finite-math assumptions) vectorises them.
njit_dot = numba.njit(cache=True, fastmath={"reassoc", "contract"}, nogil=True)


@njit_serial
def _softmax_bwd(p, dp, out):
    """``out = J_softmax^T dp = p * (dp - p.dp)`` for ``p = softmax(x)``."""
    s = 0.0
    for i in range(p.shape[0]):
        s += p[i] * dp[i]
    for i in range(p.shape[0]):
        out[i] = p[i] * (dp[i] - s)


@njit_serial
def _rates(b, d, u, D):
    """``u = r * d``: the columns of block i (W_y, W_q, W_k: D columns each; w_b: the last 4) get rate b[i]."""
    N = d.shape[0]
    for i in range(4):
        hi = N if i == 3 else (i + 1) * D
        for n in range(i * D, hi):
            u[n] = b[i] * d[n]


@njit_dot
def _read(M, v, out):
    """``out = M^T v``: M ``[D, N]``, v ``[D]``, out ``[N]``."""
    N = M.shape[1]
    for n in range(N):
        out[n] = 0.0
    for i in range(M.shape[0]):
        vi = v[i]
        for n in range(N):
            out[n] += vi * M[i, n]


@njit_dot
def _add_outer(M, k, u):
    """``M += k u^T``."""
    for i in range(M.shape[0]):
        ki = k[i]
        for n in range(M.shape[1]):
            M[i, n] += ki * u[n]


@njit_dot
def _add_outer_read(M, k, u, v, out):
    """``M += k u^T``, then ``out = M^T v`` in the same pass over M (v is the next step's input, known in
    advance): one pass instead of two, the sums in the same order as :func:`_read`'s."""
    N = M.shape[1]
    for n in range(N):
        out[n] = 0.0
    for i in range(M.shape[0]):
        ki = k[i]
        vi = v[i]
        for n in range(N):
            m = M[i, n] + ki * u[n]
            M[i, n] = m
            out[n] += vi * m


@njit_dot
def _undo_and_grad_update(M, G, k, u, du, dk):
    """Backward of ``M_t = M_{t-1} + k u^T`` with G the gradient wrt M_t (kept: it is also the gradient wrt
    M_{t-1} through the identity): ``du = G^T k``, ``dk = G u``; and the undo ``M <- M - k u^T``."""
    N = M.shape[1]
    for n in range(N):
        du[n] = 0.0
    zero = du[0]  # a zero of the array dtype: the accumulators stay float32 for float32 data
    for i in range(M.shape[0]):
        ki = k[i]
        acc = zero
        for n in range(N):
            g = G[i, n]
            du[n] += g * ki
            acc += g * u[n]
            M[i, n] -= ki * u[n]
        dk[i] = acc


@njit_dot
def _read_bwd(M, G, v, da, dv):
    """Backward of ``a = M^T v`` with da the gradient wrt a: ``dv = M da`` and ``G += v da^T``."""
    N = M.shape[1]
    dv[0] = 0.0
    zero = dv[0]  # a zero of the array dtype
    for i in range(M.shape[0]):
        vi = v[i]
        acc = zero
        for n in range(N):
            acc += M[i, n] * da[n]
            G[i, n] += vi * da[n]
        dv[i] = acc


@njit_serial
def _srwm_fwd_one(b, h, x, M0, Y, Q, K, Bt, Dd, MT, Ms):
    T = x.shape[1]
    D = x.shape[3]
    N = M0.shape[3]
    M = M0[b, h].copy()
    a = np.empty(N, dtype=x.dtype)
    p = np.empty(D, dtype=x.dtype)
    u = np.empty(N, dtype=x.dtype)
    if T > 0:
        _read(M, x[b, 0, h], a)
    for t in range(T):
        if t % CHECKPOINT == 0:
            _copy(M, Ms[b, h, t // CHECKPOINT])
        # a = M_{t-1}^T x_t: the previous step's update computed it (or the read above, at t = 0)
        y, q, k, bt, d = Y[b, t, h], Q[b, t, h], K[b, t, h], Bt[b, t, h], Dd[b, t, h]
        for j in range(D):
            y[j] = a[j]
        _softmax(a[D:2 * D], q)
        _softmax(a[2 * D:3 * D], k)
        for i in range(4):
            bt[i] = 1.0 / (1.0 + math.exp(-a[3 * D + i]))
        for j in range(D):
            p[j] = q[j] - k[j]
        _read(M, p, d)
        _rates(bt, d, u, D)
        if t + 1 < T:
            _add_outer_read(M, k, u, x[b, t + 1, h], a)  # and the next step's a = M_t^T x_{t+1}
        else:
            _add_outer(M, k, u)
    _copy(M, MT[b, h])


@njit
def srwm_fwd(x, M0, Y, Q, K, Bt, Dd, MT, Ms):
    """x, Y, Q, K: ``[B, T, H, D]``; M0, MT: ``[B, H, D, N]``; Bt: ``[B, T, H, 4]``; Dd: ``[B, T, H, N]``;
    Ms: ``[B, H, ceil(T / CHECKPOINT), D, N]``. Writes Y (outputs), Q, K, Bt, Dd (per-step vectors), MT (the
    final M) and Ms (M before every CHECKPOINT-th step)."""
    B = x.shape[0]
    H = x.shape[2]
    for bh in prange(B * H):
        _srwm_fwd_one(bh // H, bh % H, x, M0, Y, Q, K, Bt, Dd, MT, Ms)


@njit_serial
def _srwm_bwd_one(b, h, x, Q, K, Bt, Dd, MT, Ms, dY, dMT, dx, dM0):
    T = x.shape[1]
    D = x.shape[3]
    N = MT.shape[3]
    M = MT[b, h].copy()  # rebuilt backwards: M_t on entry to step t, M_{t-1} after its undo
    G = dMT[b, h].copy()  # the gradient wrt M_t
    u = np.empty(N, dtype=x.dtype)
    du = np.empty(N, dtype=x.dtype)
    dd = np.empty(N, dtype=x.dtype)
    da = np.empty(N, dtype=x.dtype)
    dk = np.empty(D, dtype=x.dtype)
    dp = np.empty(D, dtype=x.dtype)
    p = np.empty(D, dtype=x.dtype)
    db = np.empty(4, dtype=x.dtype)
    for t in range(T - 1, -1, -1):
        q, k, bt, d = Q[b, t, h], K[b, t, h], Bt[b, t, h], Dd[b, t, h]
        _rates(bt, d, u, D)
        _undo_and_grad_update(M, G, k, u, du, dk)  # now M = M_{t-1}
        if t % CHECKPOINT == 0:
            _copy(Ms[b, h, t // CHECKPOINT], M)  # the stored M_{t-1}: drop the undo's rounding error
        # u = r * d: the rates' gradient and dd
        for i in range(4):
            db[i] = 0.0
            hi = N if i == 3 else (i + 1) * D
            for n in range(i * D, hi):
                db[i] += du[n] * d[n]
                dd[n] = bt[i] * du[n]
        # d = M^T (q - k)
        for j in range(D):
            p[j] = q[j] - k[j]
        _read_bwd(M, G, p, dd, dp)
        for j in range(D):
            dk[j] -= dp[j]
        # a = M^T x: y = a[:D], q, k through softmax, b through sigmoid
        dyt = dY[b, t, h]
        for j in range(D):
            da[j] = dyt[j]
        _softmax_bwd(q, dp, da[D:2 * D])
        _softmax_bwd(k, dk, da[2 * D:3 * D])
        for i in range(4):
            da[3 * D + i] = db[i] * bt[i] * (1.0 - bt[i])
        _read_bwd(M, G, x[b, t, h], da, dx[b, t, h])
    _copy(G, dM0[b, h])


@njit
def srwm_bwd(x, Q, K, Bt, Dd, MT, Ms, dY, dMT, dx, dM0):
    """Gradients of :func:`srwm_fwd`: writes dx ``[B, T, H, D]`` and dM0 ``[B, H, D, N]``."""
    B = x.shape[0]
    H = x.shape[2]
    for bh in prange(B * H):
        _srwm_bwd_one(bh // H, bh % H, x, Q, K, Bt, Dd, MT, Ms, dY, dMT, dx, dM0)
