"""Fused CPU step kernels (numba) for the recurrent fast-weight ops: Delta RNN and Delta LSTM.

Both ops read a recurrent fast matrix R (``D x D`` per head, rows indexed by the key) with the softmax
of the previous output, after updating R by the delta rule with given (k~, v~, beta~):

    u_t = beta~_t (v~_t - R_{t-1}^T k~_t),   R_t = R_{t-1} + k~_t u_t^T,   read_t = R_t^T softmax(y_{t-1})

The forward kernels run the time loop and store only the per-step new values ``u_t`` and the
per-step outputs (y for the Delta RNN; gates, c and h for the Delta LSTM), never the matrices R_t.
The backward kernels run backwards in time and rebuild ``R_{t-1} = R_t - k~_t u_t^T`` by undoing the
rank-one update (as the authors' CUDA kernels do), so memory is ``O(T D)`` per head, not ``O(T D^2)``.

Every kernel runs ``prange`` over the (batch, head) pairs and calls a serial per-(batch, head)
function; per-thread scratch is a few ``D x D`` matrices. All kernels live in this one module so that
numba's on-disk cache (keyed on this file) is invalidated together when any of them changes. Arrays
must be C-contiguous and of one float dtype (float32 or float64; numba specialises on first use).

Numerics: the rebuilt R_{t-1} carries the rounding error of every undone update, O(T eps |k~| |u|); with
softmax keys and sigmoid betas it stays at the level of the reference's own float32 error (tested
against the step-loop reference to 1e-4 in float32 and 1e-9 in float64).
Compile time: slice assignment between arrays (``a[i] = b``) costs numba ~10 s to compile, hence the
explicit ``_copy`` loops.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._numba import njit, prange

# Serial helpers are compiled as separate (not IR-inlined) functions, which keeps numba's analysis of
# the prange kernels small.
njit_serial = numba.njit(cache=True, fastmath=False, nogil=True)
# The inner loops over D are dot products; letting LLVM reassociate them (only them: no finite-math
# assumptions) is what makes them vectorise.
njit_dot = numba.njit(cache=True, fastmath={"reassoc", "contract"}, nogil=True)


@njit_serial
def _copy(src, dst):
    """``dst[...] = src`` for 1-d or 2-d arrays (explicit loops: numba's slice assignment between
    arrays is slow to compile)."""
    a = src.reshape(-1)
    b = dst.reshape(-1)
    for i in range(a.shape[0]):
        b[i] = a[i]


@njit_serial
def _softmax(x, out):
    """``out = softmax(x)`` (max-shifted)."""
    n = x.shape[0]
    m = x[0]
    for i in range(1, n):
        if x[i] > m:
            m = x[i]
    s = 0.0
    for i in range(n):
        e = math.exp(x[i] - m)
        out[i] = e
        s += e
    inv = 1.0 / s
    for i in range(n):
        out[i] = out[i] * inv


@njit_serial
def _softmax_bwd(p, dp, out):
    """``out = J_softmax^T dp = p * (dp - p.dp)`` for ``p = softmax(x)``."""
    n = p.shape[0]
    s = 0.0
    for i in range(n):
        s += p[i] * dp[i]
    for i in range(n):
        out[i] = p[i] * (dp[i] - s)


@njit_dot
def _write_read(R, k, v, beta, p, u, a, old):
    """One delta-rule write then read, in place: ``R_{t-1} -> R_t``; ``u = beta (v - R_{t-1}^T k)``;
    ``a += R_t^T p``. ``old`` is scratch of size D."""
    D = R.shape[0]
    _keys_read(R, k, old)
    for j in range(D):
        u[j] = beta * (v[j] - old[j])
    for i in range(D):
        ki = k[i]
        pi = p[i]
        for j in range(D):
            r = R[i, j] + ki * u[j]
            R[i, j] = r
            a[j] += pi * r


@njit_dot
def _keys_read(R, k, old):
    """``old = R^T k``."""
    D = R.shape[0]
    for j in range(D):
        old[j] = 0.0
    for i in range(D):
        ki = k[i]
        for j in range(D):
            old[j] += ki * R[i, j]


@njit_dot
def _write_read_next(R, k, v, beta, p, u, a, old, knext):
    """:func:`_write_read` with ``old = R_{t-1}^T k`` given (from the previous step), which also computes the
    next step's ``old = R_t^T knext`` in the same pass over R (knext is an input, known in advance): one pass
    over R per step instead of two. The sums are in the same order as two separate passes'."""
    D = R.shape[0]
    for j in range(D):
        u[j] = beta * (v[j] - old[j])
        old[j] = 0.0
    for i in range(D):
        ki = k[i]
        pi = p[i]
        ni = knext[i]
        for j in range(D):
            r = R[i, j] + ki * u[j]
            R[i, j] = r
            a[j] += pi * r
            old[j] += ni * r


@njit_dot
def _write_read_bwd(R, dR, k, v, beta, u, p, da, dp, dk, dv, scratch):
    """Backward of :func:`_write_read` at one step; returns d beta.

    On entry R = R_t and dR = the gradient wrt R_t from the future steps; on exit R = R_{t-1} (the
    update undone) and dR = the gradient wrt R_{t-1}. ``da`` is the gradient wrt the read; the read's
    gradient wrt p is added to ``dp``; ``dk`` and ``dv`` are overwritten. ``scratch`` is ``[2, D]``.
    """
    D = R.shape[0]
    du = scratch[0]
    old = scratch[1]
    for j in range(D):
        du[j] = 0.0
        old[j] = 0.0
    zero = du[0]  # a zero of the array dtype: accumulators stay float32 for float32 data
    for i in range(D):
        pi = p[i]
        ki = k[i]
        acc_p = zero
        acc_k = zero
        for j in range(D):
            r = R[i, j]
            acc_p += r * da[j]  # dp = R_t da
            g = dR[i, j] + pi * da[j]  # dR_t += p da^T
            dR[i, j] = g
            du[j] += g * ki  # du = dR_t^T k
            acc_k += g * u[j]  # dk = dR_t u
            r -= ki * u[j]  # undo: R_{t-1} = R_t - k u^T
            R[i, j] = r
            old[j] += r * ki  # old = R_{t-1}^T k
        dp[i] += acc_p
        dk[i] = acc_k
    dbeta = 0.0
    for j in range(D):
        dv[j] = beta * du[j]
        dbeta += du[j] * (v[j] - old[j])
        du[j] = -beta * du[j]  # now d old
    for i in range(D):
        ki = k[i]
        acc = zero
        for j in range(D):
            dR[i, j] += ki * du[j]  # dR_{t-1} += k dold^T
            acc += R[i, j] * du[j]  # dk += R_{t-1} dold
        dk[i] += acc
    return dbeta


# ----------------------------------------------------------------------------------------------------
# Delta RNN: y_t = z_t + R_t^T softmax(y_{t-1})
# ----------------------------------------------------------------------------------------------------


@njit_serial
def _delta_rnn_fwd_one(b, h, z, rk, rv, rb, R0, y0, Y, U, RT):
    T = z.shape[1]
    D = z.shape[3]
    R = R0[b, h].copy()
    p = np.empty(D, dtype=z.dtype)
    old = np.empty(D, dtype=z.dtype)
    _softmax(y0[b, h], p)
    if T > 0:
        _keys_read(R, rk[b, 0, h], old)
    for t in range(T):
        y = Y[b, t, h]
        zt = z[b, t, h]
        for j in range(D):
            y[j] = zt[j]
        if t + 1 < T:
            _write_read_next(R, rk[b, t, h], rv[b, t, h], rb[b, t, h], p, U[b, t, h], y, old, rk[b, t + 1, h])
        else:
            _write_read(R, rk[b, t, h], rv[b, t, h], rb[b, t, h], p, U[b, t, h], y, old)
        _softmax(y, p)
    _copy(R, RT[b, h])


@njit
def delta_rnn_fwd(z, rk, rv, rb, R0, y0, Y, U, RT):
    """z, rk, rv, Y, U: ``[B, T, H, D]``; rb: ``[B, T, H]``; R0, RT: ``[B, H, D, D]``; y0: ``[B, H, D]``.
    Writes Y (outputs), U (new values) and RT (final R)."""
    B = z.shape[0]
    H = z.shape[2]
    for bh in prange(B * H):
        _delta_rnn_fwd_one(bh // H, bh % H, z, rk, rv, rb, R0, y0, Y, U, RT)


@njit_serial
def _delta_rnn_bwd_one(b, h, rk, rv, rb, U, Y, y0, RT, dY, dRT, dz, drk, drv, drb, dR0, dy0):
    T = Y.shape[1]
    D = Y.shape[3]
    R = RT[b, h].copy()
    dR = dRT[b, h].copy()
    g = np.zeros(D, dtype=Y.dtype)  # d loss / d y_t through y_{t+1}
    p = np.empty(D, dtype=Y.dtype)
    dp = np.empty(D, dtype=Y.dtype)
    scratch = np.empty((2, D), dtype=Y.dtype)
    for t in range(T - 1, -1, -1):
        gy = dz[b, t, h]
        dyt = dY[b, t, h]
        for j in range(D):
            gy[j] = dyt[j] + g[j]
            dp[j] = 0.0
        if t > 0:
            _softmax(Y[b, t - 1, h], p)
        else:
            _softmax(y0[b, h], p)
        drb[b, t, h] = _write_read_bwd(R, dR, rk[b, t, h], rv[b, t, h], rb[b, t, h], U[b, t, h], p, gy, dp,
                                       drk[b, t, h], drv[b, t, h], scratch)
        _softmax_bwd(p, dp, g)
    _copy(dR, dR0[b, h])
    _copy(g, dy0[b, h])


@njit
def delta_rnn_bwd(rk, rv, rb, U, Y, y0, RT, dY, dRT, dz, drk, drv, drb, dR0, dy0):
    """Gradients of :func:`delta_rnn_fwd` (``dY`` includes the gradient of the final y)."""
    B = Y.shape[0]
    H = Y.shape[2]
    for bh in prange(B * H):
        _delta_rnn_bwd_one(bh // H, bh % H, rk, rv, rb, U, Y, y0, RT, dY, dRT, dz, drk, drv, drb, dR0, dy0)


# ----------------------------------------------------------------------------------------------------
# Delta LSTM (gates i, u, o stacked in dim 3): a_g = z_g + R_g^T softmax(h_{t-1})
#   i = sigmoid(a_i), u = a_u, o = sigmoid(a_o), c_t = i u + (1 - i) c_{t-1}, h_t = c_t o
# ----------------------------------------------------------------------------------------------------


@njit_serial
def _delta_lstm_fwd_one(b, h, z, rk, rv, rb, R0, c0, h0, Hs, Cs, G, U, RT):
    T = z.shape[1]
    NG = z.shape[3]
    D = z.shape[4]
    R = R0[b, h].copy()
    p = np.empty(D, dtype=z.dtype)
    old = np.empty((NG, D), dtype=z.dtype)
    cprev = c0[b, h].copy()
    _softmax(h0[b, h], p)
    for g in range(NG if T > 0 else 0):
        _keys_read(R[g], rk[b, 0, h, g], old[g])
    for t in range(T):
        Gt = G[b, t, h]
        for g in range(NG):
            a = Gt[g]
            zt = z[b, t, h, g]
            for j in range(D):
                a[j] = zt[j]
            if t + 1 < T:
                _write_read_next(R[g], rk[b, t, h, g], rv[b, t, h, g], rb[b, t, h, g], p, U[b, t, h, g], a, old[g],
                                 rk[b, t + 1, h, g])
            else:
                _write_read(R[g], rk[b, t, h, g], rv[b, t, h, g], rb[b, t, h, g], p, U[b, t, h, g], a, old[g])
        c = Cs[b, t, h]
        hh = Hs[b, t, h]
        for j in range(D):
            ig = 1.0 / (1.0 + math.exp(-Gt[0, j]))
            og = 1.0 / (1.0 + math.exp(-Gt[2, j]))
            Gt[0, j] = ig
            Gt[2, j] = og
            cj = ig * Gt[1, j] + (1.0 - ig) * cprev[j]
            c[j] = cj
            cprev[j] = cj
            hh[j] = cj * og
        _softmax(hh, p)
    _copy(R, RT[b, h])


@njit
def delta_lstm_fwd(z, rk, rv, rb, R0, c0, h0, Hs, Cs, G, U, RT):
    """z, rk, rv, G, U: ``[B, T, H, 3, D]``; rb: ``[B, T, H, 3]``; R0, RT: ``[B, H, 3, D, D]``;
    c0, h0: ``[B, H, D]``; Hs, Cs: ``[B, T, H, D]``. Writes Hs, Cs, G (gate values i, u, o), U, RT."""
    B = z.shape[0]
    H = z.shape[2]
    for bh in prange(B * H):
        _delta_lstm_fwd_one(bh // H, bh % H, z, rk, rv, rb, R0, c0, h0, Hs, Cs, G, U, RT)


@njit_serial
def _delta_lstm_bwd_one(b, h, rk, rv, rb, U, G, Cs, Hs, c0, h0, RT, dHs, dCs, dRT, dz, drk, drv, drb, dR0, dc0,
                        dh0):
    T = U.shape[1]
    NG = U.shape[3]
    D = U.shape[4]
    R = RT[b, h].copy()
    dR = dRT[b, h].copy()
    gh = np.zeros(D, dtype=U.dtype)  # d loss / d h_t through step t+1's read
    gc = np.zeros(D, dtype=U.dtype)  # d loss / d c_t through c_{t+1}
    p = np.empty(D, dtype=U.dtype)
    dp = np.empty(D, dtype=U.dtype)
    scratch = np.empty((2, D), dtype=U.dtype)
    for t in range(T - 1, -1, -1):
        Gt = G[b, t, h]
        da = dz[b, t, h]
        c = Cs[b, t, h]
        dht = dHs[b, t, h]
        dct = dCs[b, t, h]
        if t > 0:
            cprev = Cs[b, t - 1, h]
            _softmax(Hs[b, t - 1, h], p)
        else:
            cprev = c0[b, h]
            _softmax(h0[b, h], p)
        for j in range(D):
            ig = Gt[0, j]
            og = Gt[2, j]
            gho = dht[j] + gh[j]
            dc = gho * og + gc[j] + dct[j]
            da[0, j] = dc * (Gt[1, j] - cprev[j]) * ig * (1.0 - ig)
            da[1, j] = dc * ig
            da[2, j] = gho * c[j] * og * (1.0 - og)
            gc[j] = dc * (1.0 - ig)
            dp[j] = 0.0
        for g in range(NG):
            drb[b, t, h, g] = _write_read_bwd(R[g], dR[g], rk[b, t, h, g], rv[b, t, h, g], rb[b, t, h, g],
                                              U[b, t, h, g], p, da[g], dp, drk[b, t, h, g], drv[b, t, h, g], scratch)
        _softmax_bwd(p, dp, gh)
    _copy(dR, dR0[b, h])
    _copy(gc, dc0[b, h])
    _copy(gh, dh0[b, h])


@njit
def delta_lstm_bwd(rk, rv, rb, U, G, Cs, Hs, c0, h0, RT, dHs, dCs, dRT, dz, drk, drv, drb, dR0, dc0, dh0):
    """Gradients of :func:`delta_lstm_fwd` (``dHs``/``dCs`` include the gradients of the final h/c)."""
    B = U.shape[0]
    H = U.shape[2]
    for bh in prange(B * H):
        _delta_lstm_bwd_one(bh // H, bh % H, rk, rv, rb, U, G, Cs, Hs, c0, h0, RT, dHs, dCs, dRT, dz, drk, drv, drb,
                            dR0, dc0, dh0)
