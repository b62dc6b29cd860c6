"""The Delta Delta Net's fast net (Irie et al. 2021): a first delta net programs a second one.

Signature::

    delta_delta(q, k, v, beta, *, initial_state=None, output_final_state=False, impl="auto",
                chunk_size=16) -> (o, final_state)

Shapes (per head, d = head size):
  * ``q``, ``k``: ``[B, T, H, d]`` (already feature-mapped; the layers use sum-normalised elu+1);
    ``v``: ``[B, T, H, 3d+1]``; ``beta``: ``[B, T, H]`` (already squashed, e.g. sigmoid).
  * ``initial_state``: None (zeros) or ``(S1, S2)`` with ``S1``: ``[B, H, d, 3d+1]`` (the first net's
    (3d+1) x d fast matrix, stored in the delta-rule layout ``[D_k, D_v]``) and ``S2``: ``[B, H, d, d]``.
  * returns ``o`` ``[B, T, H, d]`` (input dtype) and, with ``output_final_state=True``, ``(S1_T, S2_T)``
    (float32, or float64 for float64 inputs).

The computation at step t (write then read for both nets)::

    S1_t = S1_{t-1} + beta_t k_t (v_t - S1_{t-1}^T k_t)^T ;   r_t = S1_t^T q_t          (3d+1)
    q'_t = sn(elu1(r_t[:d]))      k'_t = sn(elu1(r_t[d:2d]))
    v'_t = r_t[2d:3d]             beta'_t = sigmoid(r_t[3d])
    S2_t = S2_{t-1} + beta'_t k'_t (v'_t - S2_{t-1}^T k'_t)^T ;  o_t = S2_t^T q'_t        d

Our choice of the generated quantities' non-linearities mirrors what the slow net of a DeltaNet
applies to its own projections: sum-normalised elu+1 for the query and key (keeps the second delta
rule stable), identity for the value, sigmoid for the learning rate.

Implementations:
  * ``"reference"``: one step loop doing both nets per step.
  * ``"step"``: the same step loop, lean (:mod:`fastweights.ops._step`); ``"auto"`` takes it for a few steps.
  * ``"chunk"`` (``"auto"`` beyond a few steps): the second net's inputs at step t depend only on the first net at step
    t, so both nets are plain delta rules: two chunkwise
    :func:`~fastweights.ops.delta_rule.delta_rule` calls over the whole sequence.
  * ``"fused"`` (``"auto"``'s choice on the CPU): the same two calls on the delta rule's fused CPU path.
"""

from __future__ import annotations

import functools

import torch

from ._utils import (acc_dtype, autocast_float32, check_dtypes_and_device, check_positive_int, check_qkv, empty_result,
                     resolve_impl, unpack_state)
from ._step import delta_write, read, stack_steps
from .delta_rule import DEFAULT_CHUNK_SIZE, delta_rule
from .feature_maps import elu1_sn

__all__ = ["delta_delta", "split_generated"]


@autocast_float32
def delta_delta(q, k, v, beta, *, initial_state=None, output_final_state=False, impl="auto",
                chunk_size=DEFAULT_CHUNK_SIZE):
    """The Delta Delta Net fast net; see the module docstring for shapes and the exact computation.

    Returns ``(o, final_state)`` with ``final_state = (S1, S2)`` or None."""
    B, T, H, d, dv = check_qkv(q, k, v, beta)
    if dv != 3 * d + 1:
        raise ValueError(
            f"v must have last dim 3d+1 = {3 * d + 1} (q', k', v' and beta' for the second net, d={d}), "
            f"got {dv}"
        )
    s1, s2 = unpack_state(initial_state, ["S1", "S2"], [(B, H, d, dv), (B, H, d, d)])
    check_dtypes_and_device([("q", q), ("k", k), ("v", v), ("beta", beta)],
                            [("initial_state.S1", s1), ("initial_state.S2", s2)])
    check_positive_int("chunk_size", chunk_size)
    fn = resolve_impl("delta_delta", impl, {"reference": _delta_delta_reference, "chunk": _delta_delta_chunk,
                                            "fused": functools.partial(_delta_delta_chunk, inner="fused"),
                                            "step": _delta_delta_step}, ["fused", "chunk"], q.device, steps=T)
    if B == 0 or T == 0:
        o, final = empty_result([q, k, v, beta, s1, s2], (B, T, H, d), q.dtype, [s1, s2],
                                [(B, H, d, dv), (B, H, d, d)])
        return o, (final if output_final_state else None)
    dt = acc_dtype(q.dtype)
    cast = lambda x: None if x is None else x.to(dt)  # noqa: E731
    o, S1, S2 = fn(cast(q), cast(k), cast(v), cast(beta), cast(s1), cast(s2), output_final_state, chunk_size)
    return o.to(q.dtype), ((S1, S2) if output_final_state else None)


def split_generated(r: torch.Tensor):
    """Splits the first net's read ``[..., 3d+1]`` into the second net's ``(q', k', v', beta')``."""
    d = (r.shape[-1] - 1) // 3
    return (elu1_sn(r[..., :d]), elu1_sn(r[..., d:2 * d]), r[..., 2 * d:3 * d],
            torch.sigmoid(r[..., 3 * d]))


def _delta_delta_chunk(q, k, v, beta, s1, s2, output_final_state, chunk_size, inner="chunk"):
    """Two whole-sequence delta rules on the delta rule's ``inner`` path (chunk, or fused for ``"fused"``)."""
    r, S1 = delta_rule(q, k, v, beta, initial_state=s1, output_final_state=output_final_state,
                       impl=inner, chunk_size=chunk_size)
    q2, k2, v2, b2 = split_generated(r)
    o, S2 = delta_rule(q2, k2, v2, b2, initial_state=s2, output_final_state=output_final_state,
                       impl=inner, chunk_size=chunk_size)
    return o, S1, S2


def _delta_step(S, q, k, v, beta):
    old = torch.einsum("bhk,bhkv->bhv", k, S)
    S = S + k[..., :, None] * (beta[..., None] * (v - old))[..., None, :]
    return S, torch.einsum("bhk,bhkv->bhv", q, S)


def _delta_delta_reference(q, k, v, beta, s1, s2, output_final_state, chunk_size):
    del output_final_state, chunk_size
    B, T, H, d = q.shape
    S1 = q.new_zeros(B, H, d, v.shape[-1]) if s1 is None else s1
    S2 = q.new_zeros(B, H, d, d) if s2 is None else s2
    outs = []
    for t in range(T):
        S1, r = _delta_step(S1, q[:, t], k[:, t], v[:, t], beta[:, t])
        S2, o = _delta_step(S2, *split_generated(r))
        outs.append(o)
    return torch.stack(outs, dim=1), S1, S2


def _delta_delta_step(q, k, v, beta, s1, s2, output_final_state, chunk_size):
    """The reference's recurrence on the step path (:mod:`._step`): for generation's one-step calls."""
    del output_final_state, chunk_size
    B, T, H, d = q.shape
    S1 = q.new_zeros(B, H, d, v.shape[-1]) if s1 is None else s1
    S2 = q.new_zeros(B, H, d, d) if s2 is None else s2
    outs = []
    for t in range(T):
        S1 = delta_write(S1, k[:, t], v[:, t], beta[:, t])
        q2, k2, v2, b2 = split_generated(read(S1, q[:, t]))
        S2 = delta_write(S2, k2, v2, b2)
        outs.append(read(S2, q2))
    return stack_steps(outs), S1, S2
