"""The fast weight programmers of the paper as token-mixing layers (see ../shared/DESIGN.md, "The models").

Every layer is the slow net (one fused input projection emitting all per-head quantities), the feature
maps, a fast-weight op from :mod:`fastweights.ops`, and the output projection ``W_o: H*d -> d_model``::

    y, state = layer(x, state=None)      # x, y: [B, T, d_model]; state: tuple of tensors, batch first

A subclass writes ``head_outputs(x, state) -> (o [B, T, H, d], final state)``; :class:`FastWeightLayer` checks the state
and applies W_o (only at the kept positions with ``keep=``, see :mod:`fastweights.layers.base`).

``state=None`` (or an all-zero state row) is a fresh start. The state is always the op's final state,
so one-token-at-a-time calls, two halves and the whole sequence agree. No dropout here: the block
applies it after the mixer.

=============== ======================= =====================================================================
name            class                   options (defaults)
=============== ======================= =====================================================================
``lt``          LinearTransformer       feature_map="elu1" | "dpfp" | "favor", nu (dpfp, 1), m (favor, d),
                                        normalize=True, impl="auto"
``deltanet``    DeltaNet                feature_map="elu1-sn" | "dpfp" | "favor", nu, m, impl="auto"
``delta-mlp``   DeltaMLP                depth=2, hidden=4*d_model/num_heads, impl="auto"
``delta-delta`` DeltaDeltaNet           impl="auto"
``delta-rnn``   DeltaRNN                impl="auto"
``delta-lstm``  DeltaLSTM               impl="auto"
``rdn``         RecurrentDeltaNet       impl="auto"
=============== ======================= =====================================================================

Every layer also takes ``head_dim`` (default ``d_model // num_heads``). ``impl`` is passed to the op
(``"reference"`` is the plain step loop, the ground truth).

Our choice, documented: the Linear Transformer's DPFP and FAVOR+ features are *not* sum-normalised
(the layer's own ``normalize`` divides by ``phi(q) . z``, which makes FAVOR+ the Performer's estimate of
softmax attention); DeltaNet's are, because the delta rule needs normalised keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..ops._utils import autocast_device
from ..ops.delta_delta import delta_delta
from ..ops.delta_lstm import delta_lstm
from ..ops.delta_mlp import delta_mlp
from ..ops.delta_rnn import delta_rnn
from ..ops.delta_rule import delta_rule
from ..ops.feature_maps import build_feature_map, elu1_sn, feature_dim
from ..ops.linear_attention import linear_attention
from ..ops.rdn import recurrent_delta_rule
from .base import check_positive_int, head_dims, register

__all__ = ["LinearTransformer", "DeltaNet", "DeltaMLP", "DeltaDeltaNet", "DeltaRNN", "DeltaLSTM",
           "RecurrentDeltaNet"]

CHUNKED_IMPLS = ("auto", "chunk", "fused", "reference")  # ops with a chunkwise-parallel path (and a fused CPU one)
FUSED_IMPLS = ("auto", "fused", "reference")  # recurrent ops with a fused step kernel


def _check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _feature_map_options(feature_map: str, nu, m) -> dict:
    """The options of a dpfp / favor map; nu and m are rejected for maps they do not apply to."""
    if nu is not None and feature_map != "dpfp":
        raise ValueError(f"nu applies only to feature_map='dpfp', got nu={nu!r} with feature_map={feature_map!r}")
    if m is not None and feature_map != "favor":
        raise ValueError(f"m applies only to feature_map='favor', got m={m!r} with feature_map={feature_map!r}")
    if feature_map == "dpfp":
        return {"nu": 1 if nu is None else check_positive_int("nu", nu)}
    if feature_map == "favor":
        return {} if m is None else {"m": check_positive_int("m", m)}
    return {}


class FastWeightLayer(nn.Module):
    """Common parts: the fused slow-net projection split per head, and the output projection.

    Subclasses call ``super().__init__`` with ``sizes``, the per-head sizes of the quantities the slow
    net emits (in order), and ``out_dim``, the per-head size of the op's output."""

    impls: tuple[str, ...] = CHUNKED_IMPLS
    state_len: int = 1  # number of tensors in the state tuple

    def __init__(self, d_model, num_heads, head_dim, impl, sizes, out_dim=None):
        super().__init__()
        self.d_model, self.num_heads, self.head_dim = head_dims(d_model, num_heads, head_dim)
        self.impl = _check_choice("impl", impl, self.impls)
        self.sizes = list(sizes)
        H, out_dim = self.num_heads, out_dim or self.head_dim
        # all projections, fused; none without sizes (the SRWM, whose own matrices read the input)
        self.in_proj = nn.Linear(self.d_model, H * sum(self.sizes), bias=False) if self.sizes else None
        self.out_proj = nn.Linear(H * out_dim, self.d_model, bias=False)  # W_o

    def project(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x [B, T, d_model]`` -> one ``[B, T, H, size]`` tensor per entry of ``self.sizes``."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"{self.layer_name}: x must have shape [B, T, {self.d_model}], got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{self.layer_name}: x must be a floating-point tensor, got dtype {x.dtype}")
        B, T, _ = x.shape
        y = self.in_proj(x)
        if autocast_device(y) is not None:
            # Under autocast the op runs in float32 anyway (ops._utils.autocast_float32): one cast here, instead of
            # one per quantity there, also keeps the feature maps in float32 (bfloat16 elu was 2.5x slower here).
            y = y.float()
        return list(y.view(B, T, self.num_heads, sum(self.sizes)).split(self.sizes, dim=-1))

    def forward(self, x, state=None, keep=None):
        """``(y [B, T, d_model], state)``: the subclass's :meth:`head_outputs` (the slow net and the op), then W_o.

        ``keep`` ([B, T] bool, optional): y is ``[N, d_model]``, the kept positions' outputs in row-major order
        (``y[keep]`` of the full call), and W_o runs at those positions only; the state is the full call's."""
        o, state = self.head_outputs(x, self.check_state(state))  # o: [B, T, H, d]
        if keep is not None:
            o = o[keep]  # [N, H, d]
        return self.merge(o), state

    def head_outputs(self, x: torch.Tensor, state):
        """``(o [B, T, H, d], final state tuple)`` of ``x [B, T, d_model]`` from the checked ``state``."""
        raise NotImplementedError

    def merge(self, o: torch.Tensor) -> torch.Tensor:
        """``o [..., H, d]`` -> ``[..., d_model]`` (concatenate the heads, then W_o)."""
        return self.out_proj(o.flatten(-2))

    def check_state(self, state):
        if state is None:
            return None
        if not isinstance(state, (tuple, list)) or len(state) != self.state_len:
            raise ValueError(f"{self.layer_name}: state must be None or a tuple of {self.state_len} tensors, "
                             f"got {type(state).__name__}"
                             + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else ""))
        return tuple(state)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, num_heads={self.num_heads}, head_dim={self.head_dim}, impl={self.impl!r}"


@register("lt")
class LinearTransformer(FastWeightLayer):
    """Linear Transformer: ``W_t = W_{t-1} + v_t (x) phi(k_t)``, ``y_t = W_t phi(q_t)`` (/ ``phi(q_t).z_t``).

    State: ``(S [B, H, D_phi, d],)``, or ``(S, z [B, H, D_phi])`` with ``normalize=True``."""

    def __init__(self, d_model, num_heads, head_dim=None, feature_map="elu1", nu=None, m=None,
                 normalize=True, impl="auto"):
        _check_choice("feature_map", feature_map, ("elu1", "dpfp", "favor"))
        fm_opts = _feature_map_options(feature_map, nu, m)
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be a bool, got {normalize!r}")
        d = head_dims(d_model, num_heads, head_dim)[2]
        super().__init__(d_model, num_heads, head_dim, impl, sizes=[d, d, d])  # q, k, v
        if feature_map != "elu1":
            fm_opts["normalize"] = False  # raw DPFP / FAVOR+ (see the module docstring)
        self.phi = build_feature_map(feature_map, d, **fm_opts)
        self.normalize = normalize
        self.state_len = 2 if normalize else 1

    def head_outputs(self, x, state):
        q, k, v = self.project(x)  # [B, T, H, d] each
        q, k = self.phi(q), self.phi(k)  # [B, T, H, D_phi]
        init = None if state is None else (state if self.normalize else state[0])
        o, final = linear_attention(q, k, v, normalize=self.normalize, initial_state=init,
                                    output_final_state=True, impl=self.impl)  # o: [B, T, H, d]
        return o, (tuple(final) if self.normalize else (final,))


@register("deltanet")
class DeltaNet(FastWeightLayer):
    """DeltaNet: ``W_t = W_{t-1} + beta_t (v_t - W_{t-1} phi(k_t)) (x) phi(k_t)``, ``y_t = W_t phi(q_t)``,
    ``beta_t = sigmoid(w_beta x_t)``. State: ``(S [B, H, D_phi, d],)``."""

    def __init__(self, d_model, num_heads, head_dim=None, feature_map="elu1-sn", nu=None, m=None,
                 impl="auto"):
        _check_choice("feature_map", feature_map, ("elu1-sn", "dpfp", "favor"))
        fm_opts = _feature_map_options(feature_map, nu, m)
        d = head_dims(d_model, num_heads, head_dim)[2]
        super().__init__(d_model, num_heads, head_dim, impl, sizes=[d, d, d, 1])  # q, k, v, beta
        self.phi = build_feature_map(feature_map, d, **fm_opts)  # sum-normalised
        self.feature_dim = feature_dim(feature_map, d, **fm_opts)

    def head_outputs(self, x, state):
        q, k, v, beta = self.project(x)  # [B, T, H, d] x3, [B, T, H, 1]
        q, k = self.phi(q), self.phi(k)  # [B, T, H, D_phi]
        beta = torch.sigmoid(beta.squeeze(-1))  # [B, T, H]
        o, S = delta_rule(q, k, v, beta, initial_state=None if state is None else state[0],
                          output_final_state=True, impl=self.impl)  # o: [B, T, H, d]
        return o, (S,)


@register("delta-mlp")
class DeltaMLP(FastWeightLayer):
    """Delta MLP: a depth-K residual fast MLP whose 2K matrices are each programmed by the delta rule.

    Per block l: ``a = sn(elu1(LN_l(u)))``, ``u <- W2_l sn(elu1(W1_l a)) + u``, from ``u_0 = q``.
    State: the 2K fast matrices ``(W1_1 [B, H, d, h], W2_1 [B, H, h, d], ...)``."""

    def __init__(self, d_model, num_heads, head_dim=None, depth=2, hidden=None, impl="auto"):
        check_positive_int("depth", depth)
        d = head_dims(d_model, num_heads, head_dim)[2]
        if hidden is None:
            if (4 * d_model) % num_heads:
                raise ValueError(f"hidden defaults to 4*d_model/num_heads, which is not an int for d_model="
                                 f"{d_model}, num_heads={num_heads}: pass hidden")
            hidden = 4 * d_model // num_heads
        check_positive_int("hidden", hidden)
        h = hidden
        # q, then per block: key1 (d), value1 (h), beta1, key2 (h), value2 (d), beta2
        super().__init__(d_model, num_heads, head_dim, impl, sizes=[d] + [d, h, 1, h, d, 1] * depth)
        self.depth, self.hidden = depth, hidden
        self.state_len = 2 * depth
        self.ln_weight = nn.Parameter(torch.ones(depth, d))  # per-block LayerNorm affine (slow) params
        self.ln_bias = nn.Parameter(torch.zeros(depth, d))

    def head_outputs(self, x, state):
        q, *rest = self.project(x)  # q: [B, T, H, d]
        keys, values, betas = [], [], []
        for l in range(self.depth):
            k1, v1, b1, k2, v2, b2 = rest[6 * l: 6 * l + 6]
            keys += [elu1_sn(k1), elu1_sn(k2)]  # [B, T, H, d], [B, T, H, h]
            values += [v1, v2]  # [B, T, H, h], [B, T, H, d]
            betas += [torch.sigmoid(b1.squeeze(-1)), torch.sigmoid(b2.squeeze(-1))]  # [B, T, H]
        o, final = delta_mlp(q, keys, values, betas, ln_weight=self.ln_weight, ln_bias=self.ln_bias,
                             initial_state=state, output_final_state=True, impl=self.impl)  # [B, T, H, d]
        return o, tuple(final)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", depth={self.depth}, hidden={self.hidden}"


@register("delta-delta")
class DeltaDeltaNet(FastWeightLayer):
    """Delta Delta Net: a first delta net (matrix (3d+1) x d) emits q', k', v', beta' that program a second
    d x d delta net, whose read is the output. State: ``(S1 [B, H, d, 3d+1], S2 [B, H, d, d])``."""

    state_len = 2

    def __init__(self, d_model, num_heads, head_dim=None, impl="auto"):
        d = head_dims(d_model, num_heads, head_dim)[2]
        super().__init__(d_model, num_heads, head_dim, impl, sizes=[d, d, 3 * d + 1, 1])  # q, k, v, beta

    def head_outputs(self, x, state):
        q, k, v, beta = self.project(x)  # [B, T, H, d] x2, [B, T, H, 3d+1], [B, T, H, 1]
        q, k = elu1_sn(q), elu1_sn(k)
        beta = torch.sigmoid(beta.squeeze(-1))  # [B, T, H]
        o, final = delta_delta(q, k, v, beta, initial_state=state, output_final_state=True,
                               impl=self.impl)  # o: [B, T, H, d]
        return o, tuple(final)


@register("delta-rnn")
class DeltaRNN(FastWeightLayer):
    """Delta RNN: ``y_t = z_t + R_t softmax(y_{t-1})`` with z_t a DeltaNet read and R a recurrent delta-rule
    matrix with softmax keys. State: ``(S [B, H, d, d], R [B, H, d, d], y [B, H, d])``."""

    impls = FUSED_IMPLS
    state_len = 3

    def __init__(self, d_model, num_heads, head_dim=None, impl="auto"):
        d = head_dims(d_model, num_heads, head_dim)[2]
        # q, k, v, beta (feedforward delta net); rk, rv, rbeta (recurrent matrix)
        super().__init__(d_model, num_heads, head_dim, impl, sizes=[d, d, d, 1, d, d, 1])

    def head_outputs(self, x, state):
        q, k, v, beta, rk, rv, rbeta = self.project(x)  # [B, T, H, d] or [B, T, H, 1]
        q, k = elu1_sn(q), elu1_sn(k)
        rk = torch.softmax(rk, dim=-1)
        beta, rbeta = torch.sigmoid(beta.squeeze(-1)), torch.sigmoid(rbeta.squeeze(-1))  # [B, T, H]
        o, final = delta_rnn(q, k, v, beta, rk, rv, rbeta, initial_state=state, output_final_state=True,
                             impl=self.impl)  # o: [B, T, H, d]
        return o, tuple(final)


@register("delta-lstm")
class DeltaLSTM(FastWeightLayer):
    """Delta LSTM (the paper's v4): per gate g in (i, u, o) a feedforward delta net and a recurrent
    delta-rule matrix; ``c_t = i*u + (1-i)*c_{t-1}``, ``h_t = c_t * o``.
    State: ``(S [B, H, 3, d, d], R [B, H, 3, d, d], c [B, H, d], h [B, H, d])``."""

    impls = FUSED_IMPLS
    state_len = 4

    def __init__(self, d_model, num_heads, head_dim=None, impl="auto"):
        d = head_dims(d_model, num_heads, head_dim)[2]
        # per gate: q, k, v, beta, rk, rv, rbeta
        super().__init__(d_model, num_heads, head_dim, impl, sizes=[3 * s for s in (d, d, d, 1, d, d, 1)])

    def head_outputs(self, x, state):
        # each [B, T, H, 3, size] with the gates stacked in dim 3 in the order (i, u, o)
        q, k, v, beta, rk, rv, rbeta = (p.unflatten(-1, (3, p.shape[-1] // 3)) for p in self.project(x))
        q, k = elu1_sn(q), elu1_sn(k)
        rk = torch.softmax(rk, dim=-1)
        beta, rbeta = torch.sigmoid(beta.squeeze(-1)), torch.sigmoid(rbeta.squeeze(-1))  # [B, T, H, 3]
        o, final = delta_lstm(q, k, v, beta, rk, rv, rbeta, initial_state=state, output_final_state=True,
                              impl=self.impl)  # o = h: [B, T, H, d]
        return o, tuple(final)


@register("rdn")
class RecurrentDeltaNet(FastWeightLayer):
    """Recurrent Delta Net: the slow net sees ``tanh(y_{t-1})`` through recurrent weights R_q, R_k, R_v
    ([H, d, d]) and r_beta ([H, d]), initialised N(0, std=1/sqrt(d)); softmax q and k, the delta rule.
    State: ``(S [B, H, d, d], y [B, H, d])``."""

    impls = FUSED_IMPLS
    state_len = 2

    def __init__(self, d_model, num_heads, head_dim=None, impl="auto"):
        H, d = head_dims(d_model, num_heads, head_dim)[1:]
        super().__init__(d_model, num_heads, head_dim, impl, sizes=[d, d, d, 1])  # W_q, W_k, W_v, w_beta
        std = 1.0 / math.sqrt(d)
        self.R_q = nn.Parameter(torch.randn(H, d, d) * std)
        self.R_k = nn.Parameter(torch.randn(H, d, d) * std)
        self.R_v = nn.Parameter(torch.randn(H, d, d) * std)
        self.r_beta = nn.Parameter(torch.randn(H, d) * std)

    def head_outputs(self, x, state):
        xq, xk, xv, xbeta = self.project(x)  # pre-activations: [B, T, H, d] x3, [B, T, H, 1]
        o, final = recurrent_delta_rule(xq, xk, xv, xbeta.squeeze(-1), self.R_q, self.R_k, self.R_v,
                                        self.r_beta, initial_state=state, output_final_state=True,
                                        impl=self.impl)  # o: [B, T, H, d]
        return o, tuple(final)
