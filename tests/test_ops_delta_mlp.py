"""Delta MLP fast net, op-specific checks: no layer-norm affine parameters, small hand checks, dtypes and state
flags, input errors. The generic checks (chunk vs reference for K=1 and K=2 blocks, gradcheck, two halves) are in
test_ops_registry.py."""

from __future__ import annotations

import pytest
import torch

from fastweights.ops.delta_mlp import delta_mlp
from fastweights.ops.delta_rule import delta_rule
from fastweights.ops.feature_maps import elu1_sn
from tests.helpers import assert_impls_match, shape_id

TOL = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.float64: dict(atol=1e-9, rtol=1e-7)}


def run(impl, q, ln_w=None, ln_b=None, initial_state=None, output_final_state=True, chunk_size=32, **named):
    """Adapter for the helpers: k0.., v0.., b0.. are the 2K keys/values/betas, s0.. the initial state."""
    n = sum(1 for x in named if x.startswith("k"))
    keys = [named[f"k{i}"] for i in range(n)]
    values = [named[f"v{i}"] for i in range(n)]
    betas = [named[f"b{i}"] for i in range(n)]
    if initial_state is None and "s0" in named:
        initial_state = tuple(named[f"s{i}"] for i in range(n))
    return delta_mlp(q, keys, values, betas, ln_weight=ln_w, ln_bias=ln_b, initial_state=initial_state,
                     output_final_state=output_final_state, impl=impl, chunk_size=chunk_size)


def make_inputs(B, T, H, d, h, K, dtype=torch.float32, init=True, ln=True, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    x = {"q": r(B, T, H, d)}
    for l in range(K):
        for i, (dk, dv) in ((2 * l, (d, h)), (2 * l + 1, (h, d))):
            x[f"k{i}"] = elu1_sn(r(B, T, H, dk))
            x[f"v{i}"] = r(B, T, H, dv)
            x[f"b{i}"] = torch.sigmoid(r(B, T, H))
    if ln:
        x["ln_w"] = 1 + 0.2 * r(K, d)
        x["ln_b"] = 0.2 * r(K, d)
    if init:
        for l in range(K):
            x[f"s{2 * l}"] = 0.3 * r(B, H, d, h)
            x[f"s{2 * l + 1}"] = 0.3 * r(B, H, h, d)
    if grad:
        for v in x.values():
            v.requires_grad_(True)
    return x


@pytest.mark.parametrize("T, d, K", [pytest.param(63, 16, 2, id=shape_id(B=2, T=63, H=2, D=16, K=2))])
@pytest.mark.parametrize("fast", ["chunk", "fused"])
def test_fast_paths_match_reference_without_ln_params(T, d, K, fast):
    """float64, zero initial state, no LN affine params (ln_weight = ln_bias = None)."""
    x = make_inputs(2, T, 2, d, 2 * d, K, dtype=torch.float64, init=False, ln=False)
    assert_impls_match(run, x, fast=fast, **TOL[torch.float64])


@pytest.mark.parametrize("impl", ["reference", "chunk", "fused"])
def test_first_step_by_hand(impl):
    """T=1 from zero state: W1 = beta1 v1 k1^T, W2 = beta2 v2 k2^T; one block (K=1), no LN affine."""
    x = make_inputs(2, 1, 3, 5, 7, 1, dtype=torch.float64, init=False, ln=False, grad=False)
    o, _ = run(impl, **x)
    q = x["q"][:, 0]
    a = elu1_sn(torch.nn.functional.layer_norm(q, (5,)))
    b = x["b0"][:, 0, :, None] * x["v0"][:, 0] * (x["k0"][:, 0] * a).sum(-1, keepdim=True)
    c = elu1_sn(b)
    y = x["b1"][:, 0, :, None] * x["v1"][:, 0] * (x["k1"][:, 0] * c).sum(-1, keepdim=True)
    torch.testing.assert_close(o[:, 0], y + q)


def test_composition_of_delta_rules():
    """K=1: the op is two delta rules with LN / feature maps between them (reference delta_rule)."""
    x = make_inputs(2, 20, 2, 6, 9, 1, dtype=torch.float64, grad=False)
    o, s = run("reference", **x)
    a = elu1_sn(torch.nn.functional.layer_norm(x["q"], (6,), x["ln_w"][0], x["ln_b"][0]))
    b, s1 = delta_rule(a, x["k0"], x["v0"], x["b0"], initial_state=x["s0"], output_final_state=True,
                       impl="reference")
    y, s2 = delta_rule(elu1_sn(b), x["k1"], x["v1"], x["b1"], initial_state=x["s1"], output_final_state=True,
                       impl="reference")
    torch.testing.assert_close(o, y + x["q"])
    torch.testing.assert_close(s[0], s1)
    torch.testing.assert_close(s[1], s2)


@pytest.mark.parametrize("impl", ["reference", "chunk", "fused"])
def test_dtypes_and_state_flags(impl):
    x = make_inputs(1, 9, 2, 4, 6, 1, grad=False, init=False)
    o, s = run(impl, output_final_state=False, **x)
    assert s is None and o.dtype == torch.float32 and o.shape == (1, 9, 2, 4)
    zeros = tuple(torch.zeros(1, 2, a, b) for a, b in ((4, 6), (6, 4)))
    o0, s0 = run(impl, initial_state=zeros, **x)
    torch.testing.assert_close(o0, o)
    xb = {n: v.to(torch.bfloat16) for n, v in x.items()}
    ob, sb = run(impl, **xb)
    assert ob.dtype == torch.bfloat16 and all(t.dtype == torch.float32 for t in sb)
    assert isinstance(sb, tuple) and len(sb) == 2


def _bad(**over):
    x = make_inputs(1, 4, 2, 4, 6, 1, grad=False, init=False)
    keys, values, betas = [x["k0"], x["k1"]], [x["v0"], x["v1"]], [x["b0"], x["b1"]]
    args = dict(q=x["q"], keys=keys, values=values, betas=betas)
    args.update(over)
    return args


def _call(**over):
    a = _bad(**{k: v for k, v in over.items() if k in ("q", "keys", "values", "betas")})
    kw = {k: v for k, v in over.items() if k not in ("q", "keys", "values", "betas")}
    return delta_mlp(a["q"], a["keys"], a["values"], a["betas"], **kw)


@pytest.mark.parametrize(
    "over, match",
    [
        (dict(keys=[torch.rand(1, 4, 2, 4)]), "same even, non-zero length 2K"),
        (dict(keys=[], values=[], betas=[]), "same even, non-zero length 2K"),
        (dict(keys=torch.rand(1, 4, 2, 4)), "keys must be a list or tuple"),
        (dict(q=torch.rand(1, 4, 2)), r"q must have shape \[B, T, H, d\]"),
        (dict(keys=[torch.rand(1, 4, 2, 5), torch.rand(1, 4, 2, 6)]), r"keys\[0\] .* last dim d=4, got 5"),
        (dict(keys=[torch.rand(1, 4, 2, 4), torch.rand(1, 4, 2, 5)]), r"keys\[1\] .* last dim 6"),
        (dict(values=[torch.rand(1, 4, 2, 6), torch.rand(1, 4, 2, 3)]), r"values\[1\] .* last dim d=4, got 3"),
        (dict(values=[torch.rand(1, 5, 2, 6), torch.rand(1, 4, 2, 4)]), r"values\[0\] must share \[B, T, H\]"),
        (dict(betas=[torch.rand(1, 4, 2), torch.rand(1, 4, 3)]), r"betas\[1\] must have shape"),
        (dict(ln_weight=torch.ones(2, 4)), r"ln_weight must have shape \(1, 4\)"),
        (dict(ln_bias=torch.ones(4)), r"ln_bias must have shape \[K, d\]"),
        (dict(initial_state=(torch.zeros(1, 2, 4, 6),)), "initial_state must be None or a tuple"),
        (dict(initial_state=(torch.zeros(1, 2, 4, 6), torch.zeros(1, 2, 4, 6))), r"initial_state.W2\[0\]"),
        (dict(impl="fast"), "impl must be one of"),
        (dict(chunk_size=0), "chunk_size must be a positive int"),
        (dict(ln_eps=-1.0), "ln_eps must be a positive float"),
    ],
)
def test_bad_inputs(over, match):
    with pytest.raises(ValueError, match=match):
        _call(**over)
