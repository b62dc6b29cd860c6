"""The Delta MLP's fast net (Irie et al. 2021): a K-block residual MLP whose 2K weight matrices are fast
weights, each programmed by the delta rule from keys/values/betas the slow net emits.

Signature::

    delta_mlp(q, keys, values, betas, *, ln_weight=None, ln_bias=None, ln_eps=1e-5,
              initial_state=None, output_final_state=False, impl="auto", chunk_size=16)
        -> (o, final_state)

Shapes (per head; d = head size, h_l = hidden size of block l, usually 4 d_model / H):
  * ``q``: ``[B, T, H, d]``, the fast net's input u_0.
  * ``keys``, ``values``, ``betas``: sequences of length 2K (K >= 1 blocks). Matrix ``2l-1`` (0-based
    index ``2l-2``, the block's first layer W^1, d -> h_l): key ``[B, T, H, d]``, value
    ``[B, T, H, h_l]``. Matrix ``2l`` (index ``2l-1``, the second layer W^2, h_l -> d): key
    ``[B, T, H, h_l]``, value ``[B, T, H, d]``. Each beta is ``[B, T, H]`` (already squashed, e.g.
    sigmoid). Keys should be normalised (sum-normalised elu+1 in the layers).
  * ``ln_weight``, ``ln_bias``: ``[K, d]`` or None: the affine parameters of each block's layer norm
    (over the head dim). None means weight 1 / bias 0. They are slow-net parameters owned by the layer.
  * ``initial_state``: None (zeros) or a tuple of the 2K fast matrices in the same order, matrix 2l-1 of
    shape ``[B, H, d, h_l]`` and matrix 2l of shape ``[B, H, h_l, d]`` (the delta-rule layout
    ``[B, H, D_k, D_v]``, read as ``S^T key``).
  * returns ``o`` ``[B, T, H, d]`` (input dtype) and, with ``output_final_state=True``, the tuple of the
    2K final matrices (float32, or float64 for float64 inputs).

The computation at step t (write then read; every matrix W is updated by the delta rule
``W_t = W_{t-1} + beta_t (v_t - W_{t-1} k_t) k_t^T`` with its own given k_t, v_t, beta_t)::

    u = q_t
    for l = 1..K:
        a = sn(elu1(LN_l(u)))          # d
        b = W^1_{l,t} a                # h_l
        c = sn(elu1(b))
        u = W^2_{l,t} c + u            # d (residual)
    o_t = u

Implementations:
  * ``"reference"``: a step loop over t doing every block (and its two delta updates) per step.
  * ``"step"``: the same step loop, lean (:mod:`fastweights.ops._step`); ``"auto"`` takes it for a few steps.
  * ``"chunk"`` (``"auto"`` beyond a few steps): the writes never depend on the reads, so every fast matrix is a plain
    delta rule whose query is the previous stage's result at the same step. The blocks run in depth
    order, each stage as one chunkwise :func:`~fastweights.ops.delta_rule.delta_rule` over the whole
    sequence (2K calls), with the layer norms and feature maps applied between them.
  * ``"fused"`` (``"auto"``'s choice on the CPU): the same 2K calls on the delta rule's fused CPU path.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ._utils import (acc_dtype, autocast_float32, check_dtypes_and_device, check_positive_int, check_tensor,
                     empty_result, resolve_impl, unpack_state)
from ._step import delta_write, read, stack_steps
from .delta_rule import DEFAULT_CHUNK_SIZE, delta_rule
from .feature_maps import elu1_sn

__all__ = ["delta_mlp"]


@autocast_float32
def delta_mlp(q, keys, values, betas, *, ln_weight=None, ln_bias=None, ln_eps=1e-5, initial_state=None,
              output_final_state=False, impl="auto", chunk_size=DEFAULT_CHUNK_SIZE):
    """The Delta MLP fast net; see the module docstring for shapes and the exact computation.

    Returns ``(o, final_state)``; ``final_state`` is a tuple of the 2K fast matrices, or None."""
    B, T, H, d, hidden = _check_inputs(q, keys, values, betas, ln_weight, ln_bias)
    K = len(hidden)
    names, shapes = [], []
    for l, h in enumerate(hidden):
        names += [f"W1[{l}]", f"W2[{l}]"]
        shapes += [(B, H, d, h), (B, H, h, d)]
    s0 = unpack_state(initial_state, names, shapes)
    tensors = [("q", q)] + [(f"{seq}[{i}]", x) for seq, xs in (("keys", keys), ("values", values), ("betas", betas))
                            for i, x in enumerate(xs)]
    weights = [("ln_weight", ln_weight), ("ln_bias", ln_bias)]
    check_dtypes_and_device(tensors, weights + [(f"initial_state.{n}", s) for n, s in zip(names, s0)])
    if not isinstance(ln_eps, (int, float)) or isinstance(ln_eps, bool) or not ln_eps > 0:
        raise ValueError(f"ln_eps must be a positive float, got {ln_eps!r}")
    check_positive_int("chunk_size", chunk_size)
    fn = resolve_impl("delta_mlp", impl, {"reference": _delta_mlp_reference, "chunk": _delta_mlp_chunk,
                                          "fused": functools.partial(_delta_mlp_chunk, inner="fused"),
                                          "step": _delta_mlp_step}, ["fused", "chunk"], q.device, steps=T)
    if B == 0 or T == 0:
        o, final = empty_result([x for _, x in tensors + weights] + list(s0), (B, T, H, d), q.dtype, s0, shapes)
        return o, (final if output_final_state else None)

    dt = acc_dtype(q.dtype)
    cast = lambda x: None if x is None else x.to(dt)  # noqa: E731
    o, state = fn(cast(q), [cast(x) for x in keys], [cast(x) for x in values], [cast(x) for x in betas],
                  [None if ln_weight is None else ln_weight[l].to(dt) for l in range(K)],
                  [None if ln_bias is None else ln_bias[l].to(dt) for l in range(K)],
                  float(ln_eps), [cast(s) for s in s0], output_final_state, chunk_size)
    return o.to(q.dtype), (tuple(state) if output_final_state else None)


def _check_inputs(q, keys, values, betas, ln_weight, ln_bias):
    check_tensor("q", q, 4, "[B, T, H, d]")
    for name, seq in (("keys", keys), ("values", values), ("betas", betas)):
        if not isinstance(seq, (list, tuple)):
            raise ValueError(f"{name} must be a list or tuple of 2K tensors, got {type(seq).__name__}")
    n = len(keys)
    if n == 0 or n % 2 or len(values) != n or len(betas) != n:
        raise ValueError(
            "keys, values and betas must all have the same even, non-zero length 2K (two fast matrices per "
            f"block), got lengths {len(keys)}, {len(values)}, {len(betas)}"
        )
    B, T, H, d = q.shape
    hidden = []
    for i in range(n):
        kname, vname, bname = f"keys[{i}]", f"values[{i}]", f"betas[{i}]"
        check_tensor(kname, keys[i], 4, "[B, T, H, D_k]")
        check_tensor(vname, values[i], 4, "[B, T, H, D_v]")
        check_tensor(bname, betas[i], 3, "[B, T, H]")
        for name, x in ((kname, keys[i]), (vname, values[i])):
            if x.shape[:3] != q.shape[:3]:
                raise ValueError(f"{name} must share [B, T, H] with q, got {tuple(x.shape)} and {tuple(q.shape)}")
        if betas[i].shape != q.shape[:3]:
            raise ValueError(f"{bname} must have shape {tuple(q.shape[:3])}, got {tuple(betas[i].shape)}")
        dk, dv = keys[i].shape[-1], values[i].shape[-1]
        block = i // 2
        if i % 2 == 0:
            if dk != d:
                raise ValueError(f"{kname} (first layer of block {block}) must have last dim d={d}, got {dk}")
            hidden.append(dv)
        else:
            if dk != hidden[-1]:
                raise ValueError(
                    f"{kname} (second layer of block {block}) must have last dim {hidden[-1]} "
                    f"(the hidden size, = values[{i - 1}]'s last dim), got {dk}"
                )
            if dv != d:
                raise ValueError(f"{vname} (second layer of block {block}) must have last dim d={d}, got {dv}")
    K = n // 2
    for name, p in (("ln_weight", ln_weight), ("ln_bias", ln_bias)):
        if p is not None:
            check_tensor(name, p, 2, "[K, d]")
            if tuple(p.shape) != (K, d):
                raise ValueError(f"{name} must have shape {(K, d)} (K={K} blocks, d={d}), got {tuple(p.shape)}")
    return B, T, H, d, hidden


def _block_input(u, w, b, eps):
    return elu1_sn(F.layer_norm(u, (u.shape[-1],), w, b, eps))


def _delta_mlp_chunk(q, keys, values, betas, ln_w, ln_b, eps, s0, output_final_state, chunk_size, inner="chunk"):
    """The 2K whole-sequence delta rules on the delta rule's ``inner`` path (chunk, or fused for ``"fused"``)."""
    u = q
    finals = []
    for l in range(len(keys) // 2):
        i, j = 2 * l, 2 * l + 1
        a = _block_input(u, ln_w[l], ln_b[l], eps)
        b, s1 = delta_rule(a, keys[i], values[i], betas[i], initial_state=s0[i],
                           output_final_state=output_final_state, impl=inner, chunk_size=chunk_size)
        c = elu1_sn(b)
        y, s2 = delta_rule(c, keys[j], values[j], betas[j], initial_state=s0[j],
                           output_final_state=output_final_state, impl=inner, chunk_size=chunk_size)
        u = y + u
        finals += [s1, s2]
    return u, finals


def _delta_mlp_reference(q, keys, values, betas, ln_w, ln_b, eps, s0, output_final_state, chunk_size):
    del chunk_size
    B, T, H, _ = q.shape
    S = [q.new_zeros(B, H, k.shape[-1], v.shape[-1]) if s is None else s
         for k, v, s in zip(keys, values, s0)]
    outs = []
    for t in range(T):
        u = q[:, t]  # [B, H, d]
        for l in range(len(keys) // 2):
            a = _block_input(u, ln_w[l], ln_b[l], eps)
            for i in (2 * l, 2 * l + 1):
                kt = keys[i][:, t]
                old = torch.einsum("bhk,bhkv->bhv", kt, S[i])
                S[i] = S[i] + kt[..., :, None] * (betas[i][:, t, :, None] * (values[i][:, t] - old))[..., None, :]
                r = torch.einsum("bhk,bhkv->bhv", a, S[i])
                if i == 2 * l:
                    a = elu1_sn(r)  # c, the input of the second layer
                else:
                    u = r + u
        outs.append(u)
    return torch.stack(outs, dim=1), S


def _delta_mlp_step(q, keys, values, betas, ln_w, ln_b, eps, s0, output_final_state, chunk_size):
    """The reference's recurrence on the step path (:mod:`._step`): for generation's one-step calls."""
    del chunk_size
    B, T, H, _ = q.shape
    S = [q.new_zeros(B, H, k.shape[-1], v.shape[-1]) if s is None else s for k, v, s in zip(keys, values, s0)]
    outs = []
    for t in range(T):
        u = q[:, t]  # [B, H, d]
        for l in range(len(keys) // 2):
            i, j = 2 * l, 2 * l + 1
            a = _block_input(u, ln_w[l], ln_b[l], eps)
            S[i] = delta_write(S[i], keys[i][:, t], values[i][:, t], betas[i][:, t])
            c = elu1_sn(read(S[i], a))
            S[j] = delta_write(S[j], keys[j][:, t], values[j][:, t], betas[j][:, t])
            u = read(S[j], c) + u
        outs.append(u)
    return stack_steps(outs), S
