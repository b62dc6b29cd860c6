"""Linear attention as a fast weight programmer (the additive outer-product rule), per head:

    S_t = S_{t-1} + k_t v_t^T,      o_t = S_t^T q_t                      (write, then read)

optionally normalised as in Katharopoulos et al. (2020):

    z_t = z_{t-1} + k_t,            o_t = S_t^T q_t / (q_t . z_t + eps)

Feature maps (elu+1, DPFP, FAVOR+) are applied by the layer before calling this op.

Four paths:
  * ``reference``: a step loop, autograd through it.
  * ``fused``: the step loop as numba CPU kernels with a hand-written backward that undoes each write
    (:mod:`._fused`); ``auto``'s choice on the CPU, 1.7-3.9x faster than ``chunk`` fwd+bwd there.
  * ``step``: the same step loop, lean (:mod:`fastweights.ops._step`); ``auto`` takes it for a few steps.
  * ``chunk``: chunkwise-parallel. With the state entering chunk n, S_n = S_0 + sum_{m<n} K_m^T V_m,
    an exclusive prefix sum over chunks, the whole computation is parallel:
        O_n = Q_n S_n + tril(Q_n K_n^T) V_n.
    The normaliser rides along as an extra value column of ones (z is S's last column).
"""

from __future__ import annotations

import torch

from ._chunk import from_chunks, to_chunks
from ._fused import FusedLinearAttention
from ._step import read, stack_steps
from ._utils import (acc_dtype, autocast_float32, check_dtypes_and_device, check_positive_int, check_qkv, empty_result,
                     resolve_impl, unpack_state)

DEFAULT_CHUNK_SIZE = 64


@autocast_float32
def linear_attention(q, k, v, *, normalize=False, eps=1e-6, initial_state=None, output_final_state=False,
                     impl="auto", chunk_size=DEFAULT_CHUNK_SIZE):
    """Linear attention (sum of outer products) fast weights.

    Args:
        q, k: ``[B, T, H, Dk]`` (already feature-mapped); v: ``[B, T, H, Dv]``.
        normalize: divide the read by ``q_t . z_t + eps`` with ``z_t = z_0 + sum k``. Off by default.
        initial_state: None, or ``S_0 [B, H, Dk, Dv]`` (normalize=False), or ``(S_0, z_0 [B, H, Dk])``
            (normalize=True).
        output_final_state: also return the final state (same structure as ``initial_state``).
        impl: ``"auto"`` (``"step"`` for at most ``_step.STEP_MAX_T`` steps, else ``"fused"`` on the CPU and
            ``"chunk"`` elsewhere), ``"fused"`` (CPU), ``"chunk"``, ``"step"`` or ``"reference"``.

    Returns:
        ``(o, final_state)``; o is ``[B, T, H, Dv]`` in the input dtype.
    """
    B, T, H, Dk, Dv = check_qkv(q, k, v)
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be a bool, got {normalize!r}")
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    check_positive_int("chunk_size", chunk_size)
    if normalize:
        s0, z0 = unpack_state(initial_state, ["S", "z"], [(B, H, Dk, Dv), (B, H, Dk)])
    else:
        (s0,) = unpack_state(initial_state, ["S"], [(B, H, Dk, Dv)])
        z0 = None
    check_dtypes_and_device([("q", q), ("k", k), ("v", v)], [("initial_state.S", s0), ("initial_state.z", z0)])
    fn = resolve_impl("linear_attention", impl,
                      {"reference": _linear_attention_reference, "chunk": _linear_attention_chunk,
                       "fused": _linear_attention_fused, "step": _linear_attention_step}, ["fused", "chunk"],
                      q.device, steps=T)
    if B == 0 or T == 0:
        states, shapes = ([s0, z0], [(B, H, Dk, Dv), (B, H, Dk)]) if normalize else ([s0], [(B, H, Dk, Dv)])
        o, final = empty_result([q, k, v, *states], (B, T, H, Dv), v.dtype, states, shapes)
        return o, ((final if normalize else final[0]) if output_final_state else None)
    dt = acc_dtype(q.dtype)
    in_dtype = v.dtype
    q, k, v = (x.to(dt) for x in (q, k, v))
    if normalize:
        # The normaliser z is an extra value column of ones: S' = [S, z], o' = [S^T q, q.z].
        v = torch.cat([v, v.new_ones(B, T, H, 1)], dim=-1)
        if s0 is not None or z0 is not None:
            s0 = s0.to(dt) if s0 is not None else q.new_zeros(B, H, Dk, Dv)
            z0 = z0.to(dt) if z0 is not None else q.new_zeros(B, H, Dk)
            s0 = torch.cat([s0, z0[..., None]], dim=-1)
    elif s0 is not None:
        s0 = s0.to(dt)
    o, s = fn(q, k, v, s0, chunk_size) if fn is _linear_attention_chunk else fn(q, k, v, s0)
    if normalize:
        o = o[..., :Dv] / (o[..., Dv:] + eps)
        final = (s[..., :Dv], s[..., Dv]) if output_final_state else None
    else:
        final = s if output_final_state else None
    return o.to(in_dtype), final


def _linear_attention_reference(q, k, v, s0):
    B, T, H, Dk = q.shape
    S = q.new_zeros(B, H, Dk, v.shape[-1]) if s0 is None else s0
    outs = []
    for t in range(T):
        S = S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return torch.stack(outs, dim=1), S


def _linear_attention_step(q, k, v, s0):
    """The reference's recurrence on the step path (:mod:`._step`): for generation's one-step calls."""
    B, T, H, Dk = q.shape
    S = q.new_zeros(B, H, Dk, v.shape[-1]) if s0 is None else s0
    outs = []
    for t in range(T):
        S = S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(read(S, q[:, t]))
    return stack_steps(outs), S


def _linear_attention_fused(q, k, v, s0):
    """The step recurrence as numba CPU kernels (:mod:`._fused`)."""
    B, T, H, Dk = q.shape
    s0 = q.new_zeros(B, H, Dk, v.shape[-1]) if s0 is None else s0
    return FusedLinearAttention.apply(q, k, v.contiguous(), s0)


def _linear_attention_chunk(q, k, v, s0, chunk_size):
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    C = min(chunk_size, T)
    Q, K, V = (to_chunks(x, C) for x in (q, k, v))  # [BH, N, C, D]; padded keys are zero
    KV = K.transpose(-1, -2) @ V  # [BH, N, Dk, Dv]: what each chunk writes
    states = KV.cumsum(dim=1) - KV  # exclusive prefix sum: the state entering each chunk
    if s0 is not None:
        states = states + s0.reshape(B * H, 1, Dk, Dv)
    O = Q @ states + (Q @ K.transpose(-1, -2)).tril_() @ V
    final = (states[:, -1] + KV[:, -1]).reshape(B, H, Dk, Dv)
    return from_chunks(O, B, H, T), final
