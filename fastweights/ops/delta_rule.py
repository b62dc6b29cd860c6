"""The delta rule (DeltaNet's fast-weight update), per head:

    u_t = beta_t (v_t - S_{t-1}^T k_t)        (the "new value")
    S_t = S_{t-1} + k_t u_t^T
    o_t = S_t^T q_t                           (write, then read)

Two paths:
  * ``reference``: a step loop, autograd through it.
  * ``chunk``: the chunkwise-parallel algorithm of Yang et al. (2024), "Parallelizing Linear
    Transformers with the Delta Rule over Sequence Length", with a hand-written backward. Per chunk of
    C steps (K, Q: C x Dk, V: C x Dv, entering state S):
        L = strict_lower(diag(beta) K K^T),  A = (I + L)^-1
        W = A diag(beta) K,                   U = A diag(beta) V          (parallel over all chunks)
        V_new = U - W S,   S <- S + K^T V_new                             (sequential over chunks)
        O = Q S + tril(Q K^T) V_new                                       (parallel over all chunks)
    The backward stores only the states entering each chunk (T/C matrices per head) and runs the same
    split: one short sequential loop over chunks, everything else batched.
"""

from __future__ import annotations

import torch

from ._chunk import from_chunks, to_chunks
from ._utils import (acc_dtype, autocast_float32, autocast_off, check_dtypes_and_device, check_positive_int, check_qkv,
                     empty_result, resolve_impl, unpack_state)

DEFAULT_CHUNK_SIZE = 32


@autocast_float32
def delta_rule(q, k, v, beta, *, initial_state=None, output_final_state=False, impl="auto",
               chunk_size=DEFAULT_CHUNK_SIZE):
    """Delta-rule fast weights.

    Args:
        q, k: ``[B, T, H, Dk]``; v: ``[B, T, H, Dv]``; beta: ``[B, T, H]`` (the learning rates; the
            layer applies sigmoid). Keys should be normalised (the layers use sum-normalised elu+1).
        initial_state: None or ``S_0`` of shape ``[B, H, Dk, Dv]``.
        output_final_state: also return ``S_T``.
        impl: ``"auto"`` (= ``"chunk"``), ``"chunk"`` or ``"reference"``.
        chunk_size: chunk length C of the chunkwise path.

    Returns:
        ``(o, S_T)``: o is ``[B, T, H, Dv]`` in the input dtype; S_T (or None) in float32/float64.
    """
    B, T, H, Dk, Dv = check_qkv(q, k, v, beta)
    (s0,) = unpack_state(initial_state, ["S"], [(B, H, Dk, Dv)])
    check_dtypes_and_device([("q", q), ("k", k), ("v", v), ("beta", beta)], [("initial_state.S", s0)])
    check_positive_int("chunk_size", chunk_size)
    fn = resolve_impl("delta_rule", impl, {"reference": _delta_rule_reference, "chunk": _delta_rule_chunk},
                      ["chunk"], q.device)
    if B == 0 or T == 0:
        o, (S,) = empty_result([q, k, v, beta, s0], (B, T, H, Dv), v.dtype, [s0], [(B, H, Dk, Dv)])
        return o, (S if output_final_state else None)
    if fn is _delta_rule_chunk:
        return fn(q, k, v, beta, s0, output_final_state, chunk_size)
    return fn(q, k, v, beta, s0, output_final_state)


def _delta_rule_reference(q, k, v, beta, s0, output_final_state):
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    in_dtype = v.dtype
    dt = acc_dtype(q.dtype)
    q, k, v, beta = (x.to(dt) for x in (q, k, v, beta))
    S = q.new_zeros(B, H, Dk, Dv) if s0 is None else s0.to(dt)
    outs = []
    for t in range(T):
        kt = k[:, t]  # [B, H, Dk]
        old = torch.einsum("bhk,bhkv->bhv", kt, S)
        u = beta[:, t, :, None] * (v[:, t] - old)  # [B, H, Dv]
        S = S + kt[..., :, None] * u[..., None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    o = torch.stack(outs, dim=1)
    return o.to(in_dtype), (S if output_final_state else None)


def _delta_rule_chunk(q, k, v, beta, s0, output_final_state, chunk_size):
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    in_dtype = v.dtype
    dt = acc_dtype(q.dtype)
    C = min(chunk_size, T)
    qc, kc, vc = (to_chunks(x.to(dt), C) for x in (q, k, v))
    bc = to_chunks(beta.to(dt), C)
    s0 = None if s0 is None else s0.to(dt).reshape(B * H, Dk, Dv)
    o, s = _ChunkDeltaRule.apply(qc, kc, vc, bc, s0)
    o = from_chunks(o, B, H, T).to(in_dtype)
    return o, (s.reshape(B, H, Dk, Dv) if output_final_state else None)


def _unit_lower_inverse(K, Kb):
    """``A = (I + strict_lower(Kb K^T))^-1`` per chunk (a unit lower-triangular solve)."""
    L = (Kb @ K.transpose(-1, -2)).tril_(-1)
    eye = torch.eye(K.shape[-2], dtype=K.dtype, device=K.device).expand_as(L)
    return torch.linalg.solve_triangular(L, eye, upper=False, unitriangular=True)


def _flat(x):
    """``[BH, N, a, b]`` -> ``[BH*N, a, b]`` (a view), for in-place batched matmuls (``baddbmm_``)."""
    return x.reshape(-1, *x.shape[2:])


class _ChunkDeltaRule(torch.autograd.Function):
    """Chunkwise delta rule on ``[BH, N, C, D]`` tensors, with a hand-written backward.

    Memory: saves the chunked inputs, A, the new values and one state per chunk; temporaries are freed
    as soon as they are used and sums are accumulated in place, so the peak stays a few input-sized
    tensors above what is saved."""

    @staticmethod
    def forward(ctx, Q, K, V, b, s0):
        BH, N, C, Dk = K.shape
        Dv = V.shape[-1]
        Kb = K * b[..., None]
        A = _unit_lower_inverse(K, Kb)
        W = A @ Kb  # [BH, N, C, Dk]
        del Kb
        U = A @ (V * b[..., None])  # [BH, N, C, Dv]
        states = K.new_empty(BH, N, Dk, Dv)
        vnew = torch.empty_like(U)
        S = K.new_zeros(BH, Dk, Dv) if s0 is None else s0.clone()
        Kt = K.transpose(-1, -2)
        for n in range(N):
            states[:, n] = S
            vn = torch.baddbmm(U[:, n], W[:, n], S, alpha=-1)
            vnew[:, n] = vn
            S = torch.baddbmm(S, Kt[:, n], vn)
        del W, U
        O = (Q @ Kt).tril_() @ vnew  # intra-chunk part
        _flat(O).baddbmm_(_flat(Q), _flat(states))  # + Q S: the state entering the chunk
        ctx.save_for_backward(Q, K, V, b, A, vnew, states)
        ctx.has_s0 = s0 is not None
        return O, S

    @staticmethod
    @autocast_off
    def backward(ctx, dO, dS):
        Q, K, V, b, A, vnew, states = ctx.saved_tensors
        BH, N, C, Dk = K.shape
        Dv = V.shape[-1]
        Kt = K.transpose(-1, -2)
        bb = b[..., None]
        dO = dO.contiguous()
        dS = K.new_zeros(BH, Dk, Dv) if dS is None else dS.clone()
        P = (Q @ Kt).tril_().transpose(-1, -2) @ dO  # [BH, N, C, Dv]: intra-chunk part of dV_new
        G = Q.transpose(-1, -2) @ dO  # [BH, N, Dk, Dv]: what the reads add to dS
        Kb = K * bb
        Wt = (A @ Kb).transpose(-1, -2)  # W, recomputed
        dnext = torch.empty_like(states)  # grad wrt the state leaving chunk n
        dvnew = torch.empty_like(vnew)
        for n in range(N - 1, -1, -1):
            dnext[:, n] = dS
            dvn = torch.baddbmm(P[:, n], K[:, n], dS)
            dvnew[:, n] = dvn
            dS = torch.baddbmm(dS + G[:, n], Wt[:, n], dvn, alpha=-1)
        del P, G, Wt
        st = _flat(states).transpose(-1, -2)
        dM = (dO @ vnew.transpose(-1, -2)).tril_()  # [BH, N, C, C]
        dQ = dM @ K
        _flat(dQ).baddbmm_(_flat(dO), st)
        dK = dM.transpose(-1, -2) @ Q
        del dM
        _flat(dK).baddbmm_(_flat(vnew), _flat(dnext).transpose(-1, -2))
        del dnext
        dW = dvnew @ states.transpose(-1, -2)  # minus the grad wrt W = A Kb
        At = A.transpose(-1, -2)
        dKb = (At @ dW).neg_()
        dA = dW @ Kb.transpose(-1, -2)  # minus the W part of dA
        del dW
        Vb = V * bb
        _flat(dA).baddbmm_(_flat(dvnew), _flat(Vb).transpose(-1, -2), alpha=-1)
        del Vb
        dVb = At @ dvnew
        del dvnew
        dL = (At @ dA @ At).tril_(-1)  # dA holds minus the grad wrt A, so this is the grad wrt L
        del dA
        _flat(dKb).baddbmm_(_flat(dL), _flat(K))
        _flat(dK).baddbmm_(_flat(dL).transpose(-1, -2), _flat(Kb))
        del dL, Kb
        db = (dKb * K).sum(-1) + (dVb * V).sum(-1)
        dK.add_(dKb.mul_(bb))
        dV = dVb.mul_(bb)
        return dQ, dK, dV, db, (dS if ctx.has_s0 else None)
