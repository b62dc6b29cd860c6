"""The hybrid quadratic-linear transformer layer (``hqlt``) of Irie, Yau and Gershman (2025), "Blending
Complementary Memory Systems in Hybrid Quadratic-Linear Transformers", in its synchronous form.

One projection gives per head q_t, k_t, v_t and beta_t, and the same q, k, v feed two memories at the same
step t (the paper's *Synchronous HQLT*):

* KV-memory: causal softmax attention over the last ``window`` tokens (the token itself and the
  ``window - 1`` before it), ``o^kv_t = sum_s softmax_s(q_t . k_s / sqrt(d)) v_s`` -- the windowed
  ``transformer`` layer's attention (:func:`~fastweights.layers.baselines.cached_attention`);
* FW-memory: the delta rule of the ``deltanet`` layer, ``S_t = S_{t-1} + beta_t phi(k_t) (v_t -
  S_{t-1}^T phi(k_t))^T``, ``o^fw_t = S_t^T phi(q_t)``, ``beta_t = sigmoid(.)``, with DeltaNet's feature
  map phi (``feature_map``, default sum-normalised elu+1) and op (:func:`fastweights.ops.delta_rule`).

The two reads are mixed per head, ``o_t = a_t o^kv_t + b_t o^fw_t``, then the heads are concatenated and
projected by W_o. ``mix`` chooses (a, b):

* ``"gated"`` (default): ``[a_t, b_t] = sigmoid(W_m x_t + c)`` per head, two independent gates from the
  input (the authors' "dynamic" per-head mixing; we add the bias c);
* ``"sum"``: a, b are learned per-head constants, initialised to 1 (the plain sum o^kv + o^fw at init).

State: ``(S [B, H, D_phi, d], k [B, W-1, H, d], v [B, W-1, H, d], valid [B, W-1] bool)``: the fast weight
and the window's key/value cache. The cache holds exactly ``W - 1`` entries from the first token on
(entries not yet written are zero and invalid), so the state has one size whatever the context length,
and an all-zero state (``layers.reset_state``) is a fresh start. The layer adds no positions, and the
model adds none by default (``ModelConfig.pos_encoding``: ``"none"`` for every layer but ``transformer``):
the causal mask and the fast weight's order-dependent state carry the order, as in the authors' default
(no positional encoding in the hybrid layer); ``pos_encoding="sinusoidal"`` adds them.

Options: ``head_dim``, ``window=64``, ``mix="gated" | "sum"``, ``feature_map`` / ``nu`` / ``m`` and
``impl`` as for ``deltanet``.

What the paper left to us, and what we followed (see docs/layers.md):

* the window includes the token itself (W - 1 past tokens), as the authors' code (flash-attention window
  ``(W - 1, 0)``) and this library's ``transformer`` do; default 64, the authors' default;
* the FW-memory is this library's DeltaNet (elu+1, sum-normalised q and k); the authors' code uses the
  flash-linear-attention DeltaNet (SiLU, L2-normalised q and k, short convolutions, an output RMSNorm),
  which we leave out so that with one memory switched off the layer is exactly ``transformer`` or
  ``deltanet`` on the same projections;
* the default mix is the input-dependent ``gated`` one: it lets every head and token weigh the precise
  short-range memory against the long-range one.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..ops.delta_rule import delta_rule
from .base import check_positive_int, register
from .baselines import cached_attention, empty_kv_cache
from .fwp import DeltaNet, _check_choice

__all__ = ["HybridQuadraticLinear", "MIXES"]

MIXES = ("gated", "sum")


@register("hqlt")
class HybridQuadraticLinear(DeltaNet):
    """Synchronous HQLT: windowed softmax attention and a DeltaNet fast weight on the same q, k, v, mixed
    per head. State: ``(S, k_cache, v_cache, valid)`` of constant size (see the module docstring)."""

    state_len = 4

    def __init__(self, d_model, num_heads, head_dim=None, window=64, mix="gated", feature_map="elu1-sn",
                 nu=None, m=None, impl="auto"):
        check_positive_int("window", window)
        _check_choice("mix", mix, MIXES)
        super().__init__(d_model, num_heads, head_dim, feature_map=feature_map, nu=nu, m=m, impl=impl)
        self.window, self.mix = window, mix
        H = self.num_heads
        if mix == "gated":
            self.mix_gate = nn.Linear(self.d_model, 2 * H)  # W_m, c: (attention, fast weight) per head
        else:
            self.mix_weight = nn.Parameter(torch.ones(H, 2))  # (attention, fast weight) per head

    def mix_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., H, 2]``: the weights (a, b) of the attention and fast-weight reads."""
        if self.mix == "sum":
            return self.mix_weight
        return torch.sigmoid(self.mix_gate(x)).unflatten(-1, (self.num_heads, 2))  # [B, T, H, 2]

    def head_outputs(self, x, state):
        q, k, v, beta = self.project(x)  # [B, T, H, d] x3, [B, T, H, 1]
        if state is None:
            S, cache = None, empty_kv_cache(x, self.window - 1, self.num_heads, self.head_dim)
        else:
            S, cache = state[0], state[1:]
        o_kv, cache = cached_attention(q, k, v, cache, self.window)  # [B, T, H, d]
        o_fw, S = delta_rule(self.phi(q), self.phi(k), v, torch.sigmoid(beta.squeeze(-1)), initial_state=S,
                             output_final_state=True, impl=self.impl)  # [B, T, H, d]
        a, b = self.mix_weights(x).unbind(-1)  # [B, T, H] or [H]
        o = a.unsqueeze(-1) * o_kv + b.unsqueeze(-1) * o_fw
        return o, (S, *cache)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", window={self.window}, mix={self.mix!r}"
