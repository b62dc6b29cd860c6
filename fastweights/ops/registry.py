"""The op registry: one :class:`OpSpec` per op family, in :data:`OPS`.

A spec names the op's public function, its implementations (``"reference"``, the step loop that is the
ground truth, and the fast paths), its state and an *input maker*: a function that makes valid random
inputs (learning rates squashed, keys normalised as the layers do, gradients on) at a given size. The
generic tests (``tests/test_ops_registry.py``: fast path against reference, gradcheck, two halves with
carried state; ``tests/test_api_inputs.py``: empty calls and bad dtypes / devices) and
``fastweights bench ops`` iterate over :data:`OPS`, so a new op is its module plus one spec here.

Usage::

    spec = OPS["delta_rule"]
    case = spec.make_inputs(2, 37, 2, 16, dtype=torch.float64, seed=0)   # B, T, H, D
    o, state = spec.run(case, "chunk", output_final_state=True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from .delta_delta import delta_delta
from .delta_lstm import NUM_GATES, delta_lstm
from .delta_mlp import delta_mlp
from .delta_rnn import delta_rnn
from .delta_rule import delta_rule
from .feature_maps import elu1_sn
from .gated_delta_rule import gated_delta_rule
from .linear_attention import linear_attention
from .rdn import recurrent_delta_rule
from .srwm import STATE_NAMES as SRWM_STATE_NAMES, srwm

__all__ = ["OPS", "OpCase", "OpSpec"]


@dataclass
class OpCase:
    """Valid inputs of one op call, made by an :class:`OpSpec`'s input maker.

    Attributes:
        inputs: the op's tensor arguments by name, in the op's argument order. Every one has time in dim 1
            (``[B, T, ...]``) except those named in ``weights``.
        weights: names of the inputs without a time axis (slow-net weights such as the RDN's recurrent
            matrices or the Delta MLP's layer-norm parameters).
        state_names: the entries of this call's state, in order (``initial_state`` and ``final_state``).
        initial_state: the initial state by name: all of ``state_names``, or empty (a zero start).
        options: the op's other keyword arguments (e.g. ``normalize=True``).
    """

    inputs: dict[str, torch.Tensor]
    state_names: tuple[str, ...]
    initial_state: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def seq_names(self) -> list[str]:
        """The inputs with a time axis (dim 1)."""
        return [n for n in self.inputs if n not in self.weights]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the call by name: the inputs, then the initial state as ``initial_state.<name>``."""
        return {**self.inputs, **{f"initial_state.{n}": s for n, s in self.initial_state.items()}}


@dataclass(frozen=True)
class OpSpec:
    """One op family: what the generic tests and the benchmark need to know about it.

    Attributes:
        name: the op's name (its function's name in :mod:`fastweights.ops`).
        fn: the public op, ``fn(*inputs, initial_state=, output_final_state=, impl=, **options)``.
        impls: ``"reference"`` first, then the fast paths.
        state_names: the names of the state entries (see the op's docstring for their shapes).
        make_inputs: ``(B, T, H, D, *, dtype, seed, with_state, requires_grad, **variant) -> OpCase``;
            the same seed gives the same values in every dtype (drawn in float64, then cast).
        variants: named keyword sets for ``make_inputs`` (e.g. the normalised linear attention); the first
            is the one the benchmark uses.
        chunked: the op takes ``chunk_size`` (it has a chunkwise path).
        tolerances: per dtype, the ``atol``/``rtol`` within which the fast paths match the reference.
        pack: ``inputs -> (args, kwargs)`` for ``fn`` when its arguments are not the inputs by keyword
            (e.g. lists of tensors); None calls ``fn(**inputs)``.
    """

    name: str
    fn: Callable
    impls: tuple[str, ...]
    state_names: tuple[str, ...]
    make_inputs: Callable[..., OpCase]
    tolerances: Mapping[torch.dtype, Mapping[str, float]]
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {"default": {}})
    chunked: bool = False
    pack: Callable[[Mapping[str, torch.Tensor]], tuple[tuple, dict]] | None = None

    @property
    def fast_impls(self) -> tuple[str, ...]:
        return tuple(i for i in self.impls if i != "reference")

    def call(self, impl: str, inputs: Mapping[str, torch.Tensor], initial_state=None, output_final_state=False,
             **options):
        """``fn`` on named inputs (as in :attr:`OpCase.inputs`) with ``impl``; returns ``(o, final_state)``."""
        args, kwargs = ((), dict(inputs)) if self.pack is None else self.pack(inputs)
        return self.fn(*args, **kwargs, initial_state=initial_state, output_final_state=output_final_state,
                       impl=impl, **options)

    def run(self, case: OpCase, impl: str, output_final_state=True, **options):
        """The op on ``case`` (its inputs, initial state and options) with ``impl``."""
        state = tuple(case.initial_state[n] for n in case.state_names) if case.initial_state else None
        return self.call(impl, case.inputs, state, output_final_state, **case.options, **options)


# ------------------------------------------------------------------------------------------------ input makers


class _Draw:
    """Random tensors from one seed, drawn in float64 and cast to ``dtype`` (same values in every dtype)."""

    def __init__(self, seed: int, dtype: torch.dtype):
        self.gen = torch.Generator().manual_seed(seed)
        self.dtype = dtype

    def __call__(self, *shape, scale=1.0, fn=None) -> torch.Tensor:
        x = torch.randn(*shape, generator=self.gen, dtype=torch.float64) * scale
        return (x if fn is None else fn(x)).to(self.dtype)

    def uniform(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.gen, dtype=torch.float64).to(self.dtype)


def _case(inputs, state_names, state, with_state, requires_grad, **fields) -> OpCase:
    initial = dict(zip(state_names, state)) if with_state else {}
    for x in (*inputs.values(), *initial.values()):
        x.requires_grad_(requires_grad)
    return OpCase(inputs=inputs, state_names=tuple(state_names), initial_state=initial, **fields)


def _l2_normalize(x):
    return torch.nn.functional.normalize(x, dim=-1)


def _softmax(x):
    return torch.softmax(x, dim=-1)


def _make_linear_attention(B, T, H, D, *, dtype=torch.float32, seed=0, with_state=True, requires_grad=True,
                           normalize=False) -> OpCase:
    r = _Draw(seed, dtype)
    elu1 = lambda x: torch.nn.functional.elu(x) + 1  # noqa: E731
    x = dict(q=r(B, T, H, D, fn=elu1), k=r(B, T, H, D, fn=lambda x: elu1(x) / D), v=r(B, T, H, D))
    names, state = ("S", "z") if normalize else ("S",), [r(B, H, D, D, scale=0.1)]
    if normalize:
        state.append(r.uniform(B, H, D))
    options = {"normalize": True} if normalize else {}
    return _case(x, names, state, with_state, requires_grad, options=options)


def _make_delta_rule(B, T, H, D, *, dtype=torch.float32, seed=0, with_state=True, requires_grad=True) -> OpCase:
    r = _Draw(seed, dtype)
    x = dict(q=r(B, T, H, D), k=r(B, T, H, D, fn=_l2_normalize), v=r(B, T, H, D),
             beta=r(B, T, H, fn=torch.sigmoid))
    return _case(x, ("S",), [r(B, H, D, D, scale=0.1)], with_state, requires_grad)


def _make_gated_delta_rule(B, T, H, D, *, dtype=torch.float32, seed=0, with_state=True, requires_grad=True) -> OpCase:
    """The delta rule's inputs and log-decays ``g = -softplus(2 x - 2)``, x ~ N(0, 1): from weak (g near -0.003,
    a near 1) to strong (g near -6, a near 0); the median a is about 0.88."""
    r = _Draw(seed, dtype)
    x = dict(q=r(B, T, H, D), k=r(B, T, H, D, fn=_l2_normalize), v=r(B, T, H, D),
             beta=r(B, T, H, fn=torch.sigmoid), g=r(B, T, H, fn=lambda z: -torch.nn.functional.softplus(2 * z - 2)))
    return _case(x, ("S",), [r(B, H, D, D, scale=0.1)], with_state, requires_grad)


def _make_delta_mlp(B, T, H, D, *, dtype=torch.float32, seed=0, with_state=True, requires_grad=True, blocks=1,
                    hidden_mult=4) -> OpCase:
    """``blocks`` residual blocks of hidden width ``hidden_mult * D`` (4 D: the layer's default)."""
    r = _Draw(seed, dtype)
    h = hidden_mult * D
    x = {"q": r(B, T, H, D)}
    names, state = [], []
    for i in range(2 * blocks):
        dk, dv = (D, h) if i % 2 == 0 else (h, D)
        x[f"keys[{i}]"] = r(B, T, H, dk, fn=elu1_sn)
        x[f"values[{i}]"] = r(B, T, H, dv)
        x[f"betas[{i}]"] = r(B, T, H, fn=torch.sigmoid)
        names.append(f"W{i % 2 + 1}[{i // 2}]")
        state.append(r(B, H, dk, dv, scale=0.3))
    x["ln_weight"] = 1 + r(blocks, D, scale=0.2)
    x["ln_bias"] = r(blocks, D, scale=0.2)
    return _case(x, names, state, with_state, requires_grad, weights=("ln_weight", "ln_bias"))


def _pack_delta_mlp(x: Mapping[str, torch.Tensor]):
    n = sum(1 for name in x if name.startswith("keys["))
    seqs = ([x[f"{s}[{i}]"] for i in range(n)] for s in ("keys", "values", "betas"))
    return (x["q"], *seqs), {"ln_weight": x.get("ln_weight"), "ln_bias": x.get("ln_bias")}


def _make_delta_delta(B, T, H, D, *, dtype=torch.float32, seed=0, with_state=True, requires_grad=True) -> OpCase:
    r = _Draw(seed, dtype)
    x = dict(q=r(B, T, H, D, fn=elu1_sn), k=r(B, T, H, D, fn=elu1_sn), v=r(B, T, H, 3 * D + 1),
             beta=r(B, T, H, fn=torch.sigmoid))
    state = [r(B, H, D, 3 * D + 1, scale=0.3), r(B, H, D, D, scale=0.3)]
    return _case(x, ("S1", "S2"), state, with_state, requires_grad)


def _make_recurrent_read(B, T, H, D, dtype, seed, with_state, requires_grad, gates) -> OpCase:
    """The Delta RNN's (``gates=()``) or Delta LSTM's (``gates=(3,)``) inputs: softmax keys, sigmoid betas."""
    r = _Draw(seed, dtype)
    G = gates
    x = dict(q=r(B, T, H, *G, D), k=r(B, T, H, *G, D, fn=_softmax), v=r(B, T, H, *G, D),
             beta=r(B, T, H, *G, fn=torch.sigmoid), rk=r(B, T, H, *G, D, fn=_softmax), rv=r(B, T, H, *G, D),
             rbeta=r(B, T, H, *G, fn=torch.sigmoid))
    names = ("S", "R", "y") if not G else ("S", "R", "c", "h")
    state = [r(B, H, *G, D, D, scale=0.3), r(B, H, *G, D, D, scale=0.3)]
    state += [r(B, H, D) for _ in names[2:]]
    return _case(x, names, state, with_state, requires_grad)


def _make_delta_rnn(B, T, H, D, *, dtype=torch.float32, seed=0, with_state=True, requires_grad=True) -> OpCase:
    return _make_recurrent_read(B, T, H, D, dtype, seed, with_state, requires_grad, gates=())


def _make_delta_lstm(B, T, H, D, *, dtype=torch.float32, seed=0, with_state=True, requires_grad=True) -> OpCase:
    return _make_recurrent_read(B, T, H, D, dtype, seed, with_state, requires_grad, gates=(NUM_GATES,))


def _make_rdn(B, T, H, D, *, dtype=torch.float32, seed=0, with_state=True, requires_grad=True) -> OpCase:
    """Pre-activations N(0, 1); recurrent weights N(0, 1/sqrt(D)) as in the paper."""
    r = _Draw(seed, dtype)
    w = D ** -0.5
    x = dict(xq=r(B, T, H, D), xk=r(B, T, H, D), xv=r(B, T, H, D), xbeta=r(B, T, H),
             Rq=r(H, D, D, scale=w), Rk=r(H, D, D, scale=w), Rv=r(H, D, D, scale=w), rbeta=r(H, D, scale=w))
    state = [r(B, H, D, D, scale=0.5), r(B, H, D)]
    return _case(x, ("S", "y"), state, with_state, requires_grad, weights=("Rq", "Rk", "Rv", "rbeta"))


def _make_srwm(B, T, H, D, *, dtype=torch.float32, seed=0, with_state=True, requires_grad=True) -> OpCase:
    """Layer-normed inputs N(0, 1); initial matrices N(0, 1/sqrt(D)) shared over the batch (``[1, H, ...]``,
    as the layer passes them), w_b with mean -1 (the layer's init); a state (the change from them) a tenth
    of that scale."""
    r = _Draw(seed, dtype)
    w = D ** -0.5
    x = dict(x=r(B, T, H, D), W_y=r(1, H, D, D, scale=w), W_q=r(1, H, D, D, scale=w), W_k=r(1, H, D, D, scale=w),
             w_b=r(1, H, D, 4, scale=w, fn=lambda z: z - 1))
    state = [r(B, H, D, D, scale=0.1 * w) for _ in range(3)] + [r(B, H, D, 4, scale=0.1 * w)]
    return _case(x, SRWM_STATE_NAMES, state, with_state, requires_grad, weights=SRWM_STATE_NAMES)


# ------------------------------------------------------------------------------------------------ the registry

_F32, _F64 = torch.float32, torch.float64


def _tol(f32: tuple[float, float], f64: tuple[float, float]) -> dict:
    return {_F32: dict(atol=f32[0], rtol=f32[1]), _F64: dict(atol=f64[0], rtol=f64[1])}


OPS: dict[str, OpSpec] = {spec.name: spec for spec in [
    OpSpec("linear_attention", linear_attention, ("reference", "chunk", "fused", "step"), ("S", "z"), _make_linear_attention,
           _tol((1e-4, 1e-3), (1e-10, 1e-9)), variants={"plain": {}, "normalized": {"normalize": True}},
           chunked=True),
    OpSpec("delta_rule", delta_rule, ("reference", "chunk", "fused", "step"), ("S",), _make_delta_rule,
           _tol((1e-4, 1e-3), (1e-10, 1e-9)), chunked=True),
    OpSpec("gated_delta_rule", gated_delta_rule, ("reference", "chunk", "fused", "step"), ("S",), _make_gated_delta_rule,
           _tol((1e-4, 1e-3), (1e-10, 1e-9)), chunked=True),
    OpSpec("delta_mlp", delta_mlp, ("reference", "chunk", "fused", "step"), ("W1[l]", "W2[l]"), _make_delta_mlp,
           _tol((1e-4, 1e-4), (1e-9, 1e-7)), variants={"K1": {}, "K2": {"blocks": 2, "hidden_mult": 2}},
           chunked=True, pack=_pack_delta_mlp),
    OpSpec("delta_delta", delta_delta, ("reference", "chunk", "fused", "step"), ("S1", "S2"), _make_delta_delta,
           _tol((1e-4, 1e-4), (1e-9, 1e-7)), chunked=True),
    OpSpec("delta_rnn", delta_rnn, ("reference", "fused", "step"), ("S", "R", "y"), _make_delta_rnn,
           _tol((1e-4, 1e-4), (1e-10, 1e-9))),
    OpSpec("delta_lstm", delta_lstm, ("reference", "fused", "step"), ("S", "R", "c", "h"), _make_delta_lstm,
           _tol((1e-4, 1e-4), (1e-10, 1e-9))),
    OpSpec("recurrent_delta_rule", recurrent_delta_rule, ("reference", "fused", "step"), ("S", "y"), _make_rdn,
           _tol((1e-4, 1e-3), (1e-10, 1e-8))),
    OpSpec("srwm", srwm, ("reference", "fused", "step"), SRWM_STATE_NAMES, _make_srwm,
           _tol((1e-4, 1e-3), (1e-10, 1e-8))),
]}
