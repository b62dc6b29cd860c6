"""The delta rule (DeltaNet's fast-weight update), per head:

    u_t = beta_t (v_t - S_{t-1}^T k_t)        (the "new value")
    S_t = S_{t-1} + k_t u_t^T
    o_t = S_t^T q_t                           (write, then read)

Four paths:
  * ``reference``: a step loop, autograd through it.
  * ``fused``: the step loop as numba CPU kernels with a hand-written backward (:mod:`._fused`);
    ``auto``'s choice on the CPU, where it runs 2-4x faster than ``chunk``.
  * ``step``: the same step loop, lean (:mod:`fastweights.ops._step`); ``auto`` takes it for a few steps
    (generation's one-token calls).
  * ``chunk``: the chunkwise-parallel algorithm of Yang et al. (2024), "Parallelizing Linear
    Transformers with the Delta Rule over Sequence Length", with a hand-written backward. Per chunk of
    C steps (K, Q: C x Dk, V: C x Dv, entering state S):
        L = strict_lower(diag(beta) K K^T),  A = (I + L)^-1
        W = A diag(beta) K,                   U = A diag(beta) V          (parallel over all chunks)
        V_new = U - W S,   S <- S + K^T V_new                             (sequential over chunks)
        O = Q S + tril(Q K^T) V_new                                       (parallel over all chunks)
    The backward keeps the states entering each chunk (T/C matrices per head), W and tril(Q K^T) and runs the
    same split: one short sequential loop over chunks, everything else batched. With dU = A^T dV_new (the grad
    wrt diag(beta) V), W's part of the grad wrt diag(beta) K is -dU S^T and the grad wrt L is -dU V_new^T
    (as V_new = U - W S): no product with A or W beyond dU.

The same chunkwise path runs the gated delta rule (:mod:`fastweights.ops.gated_delta_rule`: S is decayed by
a_t = exp(g_t) before step t). With Gam[t, s] = a_{s+1}...a_t, gam[t] = a_0...a_t, rho[s] = a_{s+1}...a_{C-1}
(all within the chunk): L and tril(Q K^T) are multiplied elementwise by Gam, W = A diag(beta gam) K,
S <- gam[C-1] S + (diag(rho) K)^T V_new and O gets diag(gam) Q S. Without g none of this runs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ._fused import FusedDeltaRule, FusedGatedDeltaRule
from ._step import delta_write, read, stack_steps
from ._utils import (acc_dtype, autocast_float32, autocast_off, check_dtypes_and_device, check_positive_int, check_qkv,
                     check_tensor, empty_result, resolve_impl, unpack_state)

# Measured (forward + backward, float32, 2 threads, interleaved): chunks of 16 ran 1.3-1.4x faster than chunks of 32
# at the benchmark shapes with D = 16 and 32, and about as fast at D = 64 (C = 64 no better there): the C x C
# triangular solve and the intra-chunk products cost O(T C^2) and O(T C D), and the loop over T / C chunks stays
# cheap.
DEFAULT_CHUNK_SIZE = 16


@autocast_float32
def delta_rule(q, k, v, beta, *, initial_state=None, output_final_state=False, impl="auto",
               chunk_size=DEFAULT_CHUNK_SIZE):
    """Delta-rule fast weights.

    Args:
        q, k: ``[B, T, H, Dk]``; v: ``[B, T, H, Dv]``; beta: ``[B, T, H]`` (the learning rates; the
            layer applies sigmoid). Keys should be normalised (the layers use sum-normalised elu+1).
        initial_state: None or ``S_0`` of shape ``[B, H, Dk, Dv]``.
        output_final_state: also return ``S_T``.
        impl: ``"auto"`` (``"step"`` for at most ``_step.STEP_MAX_T`` steps, else ``"fused"`` on the CPU and
            ``"chunk"`` elsewhere), ``"fused"`` (CPU), ``"chunk"``, ``"step"`` or ``"reference"``.
        chunk_size: chunk length C of the chunkwise path.

    Returns:
        ``(o, S_T)``: o is ``[B, T, H, Dv]`` in the input dtype; S_T (or None) in float32/float64.
    """
    return run_delta_rule("delta_rule", q, k, v, beta, None, initial_state, output_final_state, impl, chunk_size)


def run_delta_rule(name, q, k, v, beta, g, initial_state, output_final_state, impl, chunk_size):
    """The checks and the dispatch that ``delta_rule`` and ``gated_delta_rule`` (``name``) share; ``g`` None is
    the plain delta rule (the decay-free path: no decay argument reaches the implementations)."""
    B, T, H, Dk, Dv = check_qkv(q, k, v, beta)
    if g is not None:
        check_tensor("g", g, 3, "[B, T, H]")
        if g.shape != q.shape[:3]:
            raise ValueError(f"g must have shape {tuple(q.shape[:3])}, got {tuple(g.shape)}")
    (s0,) = unpack_state(initial_state, ["S"], [(B, H, Dk, Dv)])
    named = [("q", q), ("k", k), ("v", v), ("beta", beta)] + ([("g", g)] if g is not None else [])
    check_dtypes_and_device(named, [("initial_state.S", s0)])
    check_positive_int("chunk_size", chunk_size)
    if g is not None and (g > 0).any():
        raise ValueError(f"g must be <= 0 (a log-decay: exp(g) <= 1), got a maximum of {g.max().item():.4g}")
    fn = resolve_impl(name, impl, {"reference": _delta_rule_reference, "chunk": _delta_rule_chunk,
                                   "fused": _delta_rule_fused, "step": _delta_rule_step}, ["fused", "chunk"],
                      q.device, steps=T)
    if B == 0 or T == 0:
        o, (S,) = empty_result([t for _, t in named] + [s0], (B, T, H, Dv), v.dtype, [s0], [(B, H, Dk, Dv)])
        return o, (S if output_final_state else None)
    decay = {} if g is None else {"g": g}
    if fn is _delta_rule_chunk:
        return fn(q, k, v, beta, s0, output_final_state, chunk_size, **decay)
    return fn(q, k, v, beta, s0, output_final_state, **decay)


def _delta_rule_fused(q, k, v, beta, s0, output_final_state, g=None):
    """The step recurrence as numba CPU kernels (:mod:`._fused`)."""
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    in_dtype = v.dtype
    dt = acc_dtype(q.dtype)
    s0 = q.new_zeros(B, H, Dk, Dv, dtype=dt) if s0 is None else s0.to(dt)
    xs = [x.to(dt) for x in (q, k, v, beta)]
    if g is None:
        o, S = FusedDeltaRule.apply(*xs, s0)
    else:
        o, S = FusedGatedDeltaRule.apply(*xs, g.to(dt), s0)
    return o.to(in_dtype), (S if output_final_state else None)


def _delta_rule_reference(q, k, v, beta, s0, output_final_state, g=None):
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    in_dtype = v.dtype
    dt = acc_dtype(q.dtype)
    q, k, v, beta = (x.to(dt) for x in (q, k, v, beta))
    a = None if g is None else g.to(dt).exp()  # [B, T, H]: the gated delta rule's decays
    S = q.new_zeros(B, H, Dk, Dv) if s0 is None else s0.to(dt)
    outs = []
    for t in range(T):
        if a is not None:
            S = a[:, t, :, None, None] * S
        kt = k[:, t]  # [B, H, Dk]
        old = torch.einsum("bhk,bhkv->bhv", kt, S)
        u = beta[:, t, :, None] * (v[:, t] - old)  # [B, H, Dv]
        S = S + kt[..., :, None] * u[..., None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    o = torch.stack(outs, dim=1)
    return o.to(in_dtype), (S if output_final_state else None)


def _delta_rule_step(q, k, v, beta, s0, output_final_state, g=None):
    """The reference's recurrence on the step path (:mod:`._step`): for generation's one-step calls."""
    B, T, H, Dk = q.shape
    in_dtype = v.dtype
    dt = acc_dtype(q.dtype)
    q, k, v, beta = (x.to(dt) for x in (q, k, v, beta))
    a = None if g is None else g.to(dt).exp()
    S = q.new_zeros(B, H, Dk, v.shape[-1]) if s0 is None else s0.to(dt)
    outs = []
    for t in range(T):
        if a is not None:
            S = a[:, t, :, None, None] * S
        S = delta_write(S, k[:, t], v[:, t], beta[:, t])
        outs.append(read(S, q[:, t]))
    return stack_steps(outs).to(in_dtype), (S if output_final_state else None)


def _delta_rule_chunk(q, k, v, beta, s0, output_final_state, chunk_size, g=None):
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    in_dtype = v.dtype
    dt = acc_dtype(q.dtype)
    C = min(chunk_size, T)
    qc, kc, vc = (_to_steps(x.to(dt), C) for x in (q, k, v))
    bc = _to_steps(beta.to(dt), C)
    gc = None if g is None else _to_steps(g.to(dt), C)  # the padding steps: g = 0 (no decay) and beta = 0
    s0 = None if s0 is None else s0.to(dt).reshape(B * H, Dk, Dv)
    o, s = _ChunkDeltaRule.apply(qc, kc, vc, bc, gc, s0)
    o = _from_steps(o, B, H, T).to(in_dtype)
    return o, (s.reshape(B, H, Dk, Dv) if output_final_state else None)


def _to_steps(x, C):
    """``[B, T, H, *D]`` -> ``[N, B*H, C, *D]`` (chunk-major, so that chunk n of every head is one contiguous
    block: the sequential loops read and write whole blocks in place), T zero-padded up to ``N*C``; one copy."""
    B, T, H = x.shape[:3]
    rest = x.shape[3:]
    N = -(-T // C)
    if N * C != T:
        x = F.pad(x, (0, 0) * len(rest) + (0, 0, 0, N * C - T))
    x = x.reshape(B, N, C, H, *rest).movedim((1, 3), (0, 2))  # [N, B, H, C, *D]
    return x.reshape(N, B * H, C, *rest)


def _from_steps(x, B, H, T):
    """``[N, B*H, C, *D]`` -> ``[B, T, H, *D]`` (drops the padding)."""
    N, _, C = x.shape[:3]
    rest = x.shape[3:]
    x = x.reshape(N, B, H, C, *rest).movedim((0, 2), (1, 3))  # [B, N, C, H, *D]
    x = x.reshape(B, N * C, H, *rest)
    return x if N * C == T else x[:, :T]  # no slice (and no copy in its backward) without padding


class _Decays(NamedTuple):
    """The gated delta rule's decays within each chunk (``[N, BH, C]``, or ``[N, BH, C, C]`` for ``pair``), from
    the log-decays g: ``first[t] = exp(g_0 + ... + g_t)`` (from the state entering the chunk to step t),
    ``pair[t, s] = exp(g_{s+1} + ... + g_t)`` (from step s to step t, s <= t; 1 above the diagonal),
    ``last[s] = exp(g_{s+1} + ... + g_{C-1})`` (from step s to the chunk's end) and ``whole[n]`` (the whole chunk
    ``[N, BH]``). Each exponent is summed from the g's it spans, never a difference of two running sums, so no
    precision is lost where strong and weak decays mix, and g = -inf (a full reset) gives exact zeros.
    All None: the plain delta rule."""

    first: torch.Tensor | None = None
    pair: torch.Tensor | None = None
    last: torch.Tensor | None = None
    whole: torch.Tensor | None = None


def _decays(g) -> _Decays:
    if g is None:
        return _Decays()
    C = g.shape[-1]
    first = g.cumsum(-1).exp()
    to_end = g.flip(-1).cumsum(-1).flip(-1)  # g_s + ... + g_{C-1}
    last = F.pad(to_end[..., 1:], (0, 1)).exp()
    spans = g[..., :, None].expand(*g.shape, C).tril(-1).cumsum(-2)  # [t, s]: g_{s+1} + ... + g_t; 0 for s >= t
    return _Decays(first, spans.exp_(), last, first[..., -1])


def _rows(x, w):
    """``x [..., C, D]`` with row t scaled by ``w[..., t]``; x itself when w is None (no decay)."""
    return x if w is None else x * w[..., None]


def _rows_(x, w):
    """:func:`_rows` in place (x a fresh tensor)."""
    return x if w is None else x.mul_(w[..., None])


def _decayed(M, pair):
    """The ``[..., C, C]`` matrix M (a fresh tensor) times the pairwise decays, in place; M when there are none."""
    return M if pair is None else M.mul_(pair)


def _unit_lower_inverse(K, Kb, pair=None):
    """``A = (I + strict_lower(Kb K^T) * pair)^-1`` per chunk (a unit lower-triangular solve)."""
    L = _decayed((Kb @ K.transpose(-1, -2)).tril_(-1), pair)
    eye = torch.eye(K.shape[-2], dtype=K.dtype, device=K.device).expand_as(L)
    return torch.linalg.solve_triangular(L, eye, upper=False, unitriangular=True)


def _flat(x):
    """``[N, BH, a, b]`` -> ``[N*BH, a, b]`` (a view), for in-place batched matmuls (``baddbmm_``)."""
    return x.reshape(-1, *x.shape[2:])


class _ChunkDeltaRule(torch.autograd.Function):
    """Chunkwise (gated) delta rule on chunk-major ``[N, BH, C, D]`` tensors, with a hand-written backward; ``g``
    (the chunked log-decays ``[N, BH, C]``) or None (the plain delta rule, which then runs exactly the decay-free
    code).

    Memory: saves the chunked inputs, A, W, the masked intra-chunk scores M, the new values and one state per
    chunk (with g, also its decays: one C x C matrix per chunk, like A); W and M are kept rather than recomputed
    in the backward (two batched products fewer). The sequential loops update each chunk's new values and states
    in place in their slots, so they copy nothing but the running state."""

    @staticmethod
    def forward(ctx, Q, K, V, b, g, s0):
        N, BH, C, Dk = K.shape
        Dv = V.shape[-1]
        d = _decays(g)
        Kb = K * b[..., None]
        A = _unit_lower_inverse(K, Kb, d.pair)
        W = A @ _rows_(Kb, d.first)  # [N, BH, C, Dk]
        del Kb
        vnew = A @ (V * b[..., None])  # [N, BH, C, Dv]: U, which becomes U - W S chunk by chunk, in place
        Kt = K.transpose(-1, -2)
        M = _decayed((Q @ Kt).tril_(), d.pair)  # the intra-chunk reads' scores
        states = K.new_empty(N + 1, BH, Dk, Dv)  # states[n]: the state entering chunk n; states[N]: the final one
        if s0 is None:
            states[0].zero_()
        else:
            states[0].copy_(s0)
        Kt_end = Kt if g is None else _rows(K, d.last).transpose(-1, -2)  # each step's write at the chunk's end
        for n in range(N):
            vnew[n].baddbmm_(W[n], states[n], alpha=-1)
            if g is None:
                torch.baddbmm(states[n], Kt_end[n], vnew[n], out=states[n + 1])
            else:
                torch.mul(states[n], d.whole[n, :, None, None], out=states[n + 1]).baddbmm_(Kt_end[n], vnew[n])
        O = M @ vnew  # intra-chunk part
        _flat(O).baddbmm_(_flat(_rows(Q, d.first)), _flat(states[:N]))  # + Q S: the state entering the chunk
        ctx.save_for_backward(Q, K, V, b, g, A, W, M, vnew, states)
        ctx.has_s0, ctx.decays = s0 is not None, d
        return O, states[N].clone()

    @staticmethod
    @autocast_off
    def backward(ctx, dO, dS):
        Q, K, V, b, g, A, W, M, vnew, states = ctx.saved_tensors
        N, BH, C, Dk = K.shape
        Dv = V.shape[-1]
        d = ctx.decays
        want_g = g is not None and ctx.needs_input_grad[4]
        bb = b[..., None]
        dO = dO.contiguous()
        dvnew = M.transpose(-1, -2) @ dO  # [N, BH, C, Dv]: its intra-chunk part (the loop adds the rest in place)
        del M
        dO_first = _rows(dO, d.first)  # the reads of the entering state, decayed
        # dstates[n]: grad wrt the state entering chunk n (dstates[N]: the final one); starts as what the reads of
        # the entering state add to it, and the loop adds the rest in place
        dstates = K.new_empty(N + 1, BH, Dk, Dv)
        torch.bmm(_flat(Q).transpose(-1, -2), _flat(dO_first), out=_flat(dstates[:N]))
        if dS is None:
            dstates[N].zero_()
        else:
            dstates[N].copy_(dS)
        K_end = _rows(K, d.last)
        Wt = W.transpose(-1, -2)
        for n in range(N - 1, -1, -1):
            dvnew[n].baddbmm_(K_end[n], dstates[n + 1])
            if g is None:
                dstates[n].add_(dstates[n + 1])
            else:
                dstates[n].addcmul_(dstates[n + 1], d.whole[n, :, None, None])
            dstates[n].baddbmm_(Wt[n], dvnew[n], alpha=-1)
        del Wt
        dnext = dstates[1:]  # grad wrt the state leaving each chunk
        st = _flat(states[:N]).transpose(-1, -2)
        dM = _decayed((dO @ vnew.transpose(-1, -2)).tril_(), d.pair)  # [N, BH, C, C]
        dQ = dM @ K
        _flat(dQ).baddbmm_(_flat(dO_first), st)
        dK = dM.transpose(-1, -2) @ Q
        del dM
        _flat(dK).baddbmm_(_flat(_rows(vnew, d.last)), _flat(dnext).transpose(-1, -2))
        # <S_out, dS_out> per chunk, S_out the next chunk's entering state (see _log_decay_grad)
        dG_end = (dnext * states[1:]).sum((-2, -1)) if want_g else None
        # With dVb = A^T dvnew (the grad wrt Vb, as U = A Vb): W = A Kb_first gets -dvnew S^T, so Kb_first gets
        # -A^T dvnew S^T = -dVb S^T, and A gets dA = dvnew (Vb^T - S^T Kb_first^T); L (A = (I + L)^-1) gets
        # -A^T dA A^T = -dVb (U^T - S^T W^T) = -dVb vnew^T: both from dVb, no product with A or W left.
        dVb = A.transpose(-1, -2) @ dvnew
        dLn = _decayed((dVb @ vnew.transpose(-1, -2)).tril_(-1), d.pair)  # minus the grad wrt strict_lower(Kb K^T)
        dKb = _rows_(dVb @ states[:N].transpose(-1, -2), d.first)
        _flat(dKb).baddbmm_(_flat(dLn), _flat(K))
        dKb.neg_()  # the grad wrt Kb
        Kb = K * bb
        _flat(dK).baddbmm_(_flat(dLn).transpose(-1, -2), _flat(Kb), alpha=-1)
        del dLn
        del Kb
        k_dKb = torch.linalg.vecdot(dKb, K)
        db = k_dKb + torch.linalg.vecdot(dVb, V)
        dg = _log_decay_grad(Q, dQ, K, dK, b * k_dKb, dG_end) if want_g else None
        dK.add_(dKb.mul_(bb))
        dV = dVb.mul_(bb)
        return dQ, dK, dV, db, dg, (dstates[0] if ctx.has_s0 else None)


def _log_decay_grad(Q, dQ, K, dK, kb_dKb, dG_end):
    """The gradient wrt the chunked log-decays g, from the other gradients (before dK takes in the Kb part;
    ``kb_dKb[t] = kb_t . dkb_t``).

    Every decay is exp(G_t - G_s) with G_t = g_0 + ... + g_t, so it suffices to find dG, the gradient wrt G, and
    dg = the reverse running sum of dG. Each decay scales a product whose gradient the backward already has:
    the decayed reads ``q_t`` (intra-chunk and of the entering state) and writes ``kb_t`` (W and L) put
    ``+x_t . dx_t`` on G_t, the keys ``k_s`` read at a later step (M, L) or written to the chunk's end put
    ``-k_s . dk_s`` on G_s, and the chunk's end state S_out puts ``<S_out, dS_out>`` on G_{C-1} (``dG_end``)."""
    dG = (Q * dQ).sum(-1) - (K * dK).sum(-1) + kb_dKb
    dG[..., -1] += dG_end
    return dG.flip(-1).cumsum(-1).flip(-1)
