"""The paper's baselines as token mixers: causal softmax attention (``transformer``) and the ``lstm``.

Both follow the mixer interface of :mod:`fastweights.layers.base`::

    y, state = layer(x, state=None)      # x, y: [B, T, d_model]

* ``transformer``: multi-head causal softmax attention through ``F.scaled_dot_product_attention``,
  with an output projection W_o. Its state is the key/value cache plus a validity mask,
  ``(k [B, L, H, D], v [B, L, H, D], valid [B, L] bool)``: zeroing a row (``layers.state.reset_state``)
  marks all its cached entries invalid, which is a fresh start for that row. With ``window=W`` every
  query attends to itself and the ``W - 1`` tokens before it, and the cache keeps only those ``W - 1``
  tokens (memory constant in context length); without it the cache grows by one entry per token.
  The layer adds no positions: the model adds sinusoidal position encodings (``pos_encoding``).
  ``layer(x, state, keep=mask)`` ([B, T] bool) returns only the kept positions' outputs, ``[N, d_model]`` in
  row-major order: from a fresh start without a window, the queries, the attention and W_o run at those
  positions only (keys and values still at every position); otherwise the full output is indexed.
* ``lstm``: ``torch.nn.LSTM`` with input and hidden size d_model; state ``(h [B, d_model],
  c [B, d_model])``, zero = fresh start. ``num_heads`` and ``head_dim`` do not apply to it (accepted so
  that every layer can be built from the same config, then ignored).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops._utils import acc_dtype
from .base import check_positive_int, head_dims, register


def empty_kv_cache(x: torch.Tensor, length: int, num_heads: int, head_dim: int):
    """A fresh key/value cache for :func:`cached_attention`: ``length`` zero entries, all invalid, in x's
    dtype and on its device, for a batch of ``x.shape[0]``."""
    k = x.new_zeros(x.shape[0], length, num_heads, head_dim)
    return k, torch.zeros_like(k), torch.zeros(x.shape[0], length, dtype=torch.bool, device=x.device)


def cached_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache, window: int | None = None):
    """Causal softmax attention of ``q, k, v [B, T, H, D]`` over a key/value cache and themselves.

    ``cache`` is ``(k [B, L, H, D], v [B, L, H, D], valid [B, L] bool)`` (see :func:`empty_kv_cache`): the
    cached keys and values precede the T new ones, and invalid entries are never attended to. With
    ``window=W`` each query attends to itself and the ``W - 1`` positions before it, and the returned cache
    keeps only the last ``W - 1`` entries (all of them when ``window`` is None).

    Returns ``(o [B, T, H, D], new cache)``; o is a view of a ``[B, H, T, D]`` tensor."""
    B, T = q.shape[:2]
    k_cache, v_cache, valid = cache
    if k_cache.shape[1] == 0 and window is None:
        # a fresh start over the whole past (training): plain causal attention, which lets the kernel skip the
        # blocks above the diagonal and build no [B, 1, T, T] mask (the same result as the mask below)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return o.transpose(1, 2), (k, v, torch.ones(B, T, dtype=torch.bool, device=q.device))
    k_cache, v_cache = k_cache.to(k.dtype), v_cache.to(v.dtype)
    L = k_cache.shape[1]
    keys = torch.cat([k_cache, k], dim=1)  # [B, L + T, H, D]
    values = torch.cat([v_cache, v], dim=1)
    valid = torch.cat([valid.to(torch.bool), torch.ones(B, T, dtype=torch.bool, device=q.device)], dim=1)

    q_pos = torch.arange(L, L + T, device=q.device)[:, None]  # [T, 1] positions in the concatenation
    k_pos = torch.arange(L + T, device=q.device)[None, :]  # [1, L + T]
    allowed = k_pos <= q_pos
    if window is not None:
        allowed = allowed & (k_pos > q_pos - window)
    mask = allowed[None, None] & valid[:, None, None, :]  # [B, 1, T, L + T]; each query sees itself
    o = F.scaled_dot_product_attention(q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2),
                                       attn_mask=mask)  # [B, H, T, D]

    if window is not None and keys.shape[1] > window - 1:
        start = keys.shape[1] - (window - 1)
        keys, values, valid = keys[:, start:].clone(), values[:, start:].clone(), valid[:, start:].clone()
    return o.transpose(1, 2), (keys, values, valid)


@register("transformer")
class SoftmaxAttention(nn.Module):
    """Causal multi-head softmax attention with a key/value cache as its state.

    Options: ``head_dim`` (default d_model // num_heads), ``window`` (None: attend to the whole
    past; W: to the last W tokens including the current one)."""

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None = None, window: int | None = None):
        super().__init__()
        self.d_model, self.num_heads, self.head_dim = head_dims(d_model, num_heads, head_dim)
        self.window = None if window is None else check_positive_int("window", window)
        inner = self.num_heads * self.head_dim
        self.qkv = nn.Linear(d_model, 3 * inner, bias=False)
        self.out = nn.Linear(inner, d_model, bias=False)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, head_dim={self.head_dim}, window={self.window}"

    def forward(self, x: torch.Tensor, state=None, keep=None):
        """``keep`` ([B, T] bool, optional): return ``[N, d_model]``, the kept positions' outputs in row-major
        order (``y[keep]`` of the full call); the state is the full call's."""
        B, T, _ = x.shape
        H, D = self.num_heads, self.head_dim
        if keep is not None and state is None and self.window is None:
            return self._kept_queries(x, keep)
        q, k, v = self.qkv(x).view(B, T, 3, H, D).unbind(2)  # each [B, T, H, D]
        # the cache keeps the projections' dtype (bfloat16 under autocast): it only stores them, no sums
        cache = empty_kv_cache(k, 0, H, D) if state is None else state
        o, state = cached_attention(q, k, v, cache, self.window)
        y = self.out(o.reshape(B, T, H * D))
        return (y if keep is None else y[keep]), state

    def _kept_queries(self, x: torch.Tensor, keep: torch.Tensor):
        """A fresh start's attention for the kept queries only. The N kept queries are packed into
        ``[B, Kmax]`` slots (Kmax = the most kept positions of a row), each attending causally to its row's keys
        up to its own position; empty slots attend to position 0 and are dropped."""
        B, T, _ = x.shape
        H, D, inner = self.num_heads, self.head_dim, self.num_heads * self.head_dim
        w_q, w_kv = self.qkv.weight.split([inner, 2 * inner])
        k, v = F.linear(x, w_kv).view(B, T, 2, H, D).unbind(2)  # [B, T, H, D] each
        rows, pos = keep.nonzero(as_tuple=True)  # row-major, as x[keep]
        counts = keep.sum(1)
        slots = torch.arange(rows.shape[0], device=x.device) - (counts.cumsum(0) - counts)[rows]
        width = int(counts.max()) if rows.numel() else 0
        q = x.new_zeros(B, width, H, D, dtype=k.dtype).index_put((rows, slots), F.linear(x[keep], w_q).view(-1, H, D))
        q_pos = torch.zeros(B, width, dtype=torch.long, device=x.device).index_put((rows, slots), pos)
        mask = torch.arange(T, device=x.device) <= q_pos[..., None]  # [B, Kmax, T]
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=mask[:, None])  # [B, H, Kmax, D]
        o = o.transpose(1, 2)[rows, slots]  # [N, H, D]
        return self.out(o.reshape(-1, inner)), (k, v, torch.ones(B, T, dtype=torch.bool, device=x.device))


@register("lstm")
class LSTMLayer(nn.Module):
    """``torch.nn.LSTM`` (d_model -> d_model) as a mixer; state ``(h, c)``, each ``[B, d_model]``."""

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None = None):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("num_heads", num_heads)  # not used: validated for a uniform interface
        if head_dim is not None:
            check_positive_int("head_dim", head_dim)
        self.d_model = d_model
        self.lstm = nn.LSTM(d_model, d_model, batch_first=True)

    def forward(self, x: torch.Tensor, state=None):
        acc = acc_dtype(x.dtype)
        if x.shape[0] == 0 or x.shape[1] == 0:  # nothing to read: the state passes through (zeros if fresh)
            B = x.shape[0]
            if state is None:
                state = (x.new_zeros(B, self.d_model, dtype=acc), x.new_zeros(B, self.d_model, dtype=acc))
            return x.new_zeros(x.shape[0], x.shape[1], self.d_model), state
        hx = None
        if state is not None:
            h, c = state
            hx = (h.to(x.dtype).unsqueeze(0).contiguous(), c.to(x.dtype).unsqueeze(0).contiguous())
        y, (h, c) = self.lstm(x, hx)  # the state stays float32 under autocast (which runs the LSTM in bfloat16)
        return y, (h.squeeze(0).to(acc), c.squeeze(0).to(acc))
