"""Delta Delta Net fast net, op-specific checks: the composition of two delta rules, dtypes and state flags, input
errors. The generic checks (chunk vs reference, gradcheck, two halves) are in test_ops_registry.py."""

from __future__ import annotations

import pytest
import torch

from fastweights.ops.delta_delta import delta_delta, split_generated
from fastweights.ops.delta_rule import delta_rule
from fastweights.ops.feature_maps import elu1_sn


def run(impl, q, k, v, beta, s1=None, s2=None, initial_state=None, output_final_state=True, chunk_size=32):
    if initial_state is None and s1 is not None:
        initial_state = (s1, s2)
    return delta_delta(q, k, v, beta, initial_state=initial_state, output_final_state=output_final_state,
                       impl=impl, chunk_size=chunk_size)


def make_inputs(B, T, H, d, dtype=torch.float32, init=True, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    x = {"q": elu1_sn(r(B, T, H, d)), "k": elu1_sn(r(B, T, H, d)), "v": r(B, T, H, 3 * d + 1),
         "beta": torch.sigmoid(r(B, T, H))}
    if init:
        x["s1"] = 0.3 * r(B, H, d, 3 * d + 1)
        x["s2"] = 0.3 * r(B, H, d, d)
    if grad:
        for t in x.values():
            t.requires_grad_(True)
    return x


def test_composition_of_delta_rules():
    """The op is delta_rule(split(delta_rule(q, k, v, beta))) with the documented non-linearities."""
    x = make_inputs(2, 20, 2, 5, dtype=torch.float64, grad=False)
    o, (S1, S2) = run("reference", **x)
    r, s1 = delta_rule(x["q"], x["k"], x["v"], x["beta"], initial_state=x["s1"], output_final_state=True,
                       impl="reference")
    d = 5
    q2, k2, v2, b2 = elu1_sn(r[..., :d]), elu1_sn(r[..., d:2 * d]), r[..., 2 * d:3 * d], torch.sigmoid(r[..., 3 * d])
    for a, b in zip(split_generated(r), (q2, k2, v2, b2)):
        torch.testing.assert_close(a, b)
    y, s2 = delta_rule(q2, k2, v2, b2, initial_state=x["s2"], output_final_state=True, impl="reference")
    torch.testing.assert_close(o, y)
    torch.testing.assert_close(S1, s1)
    torch.testing.assert_close(S2, s2)


@pytest.mark.parametrize("impl", ["reference", "chunk", "fused"])
def test_dtypes_and_state_flags(impl):
    x = make_inputs(1, 9, 2, 4, grad=False, init=False)
    o, s = run(impl, output_final_state=False, **x)
    assert s is None and o.dtype == torch.float32 and o.shape == (1, 9, 2, 4)
    o0, _ = run(impl, initial_state=(torch.zeros(1, 2, 4, 13), torch.zeros(1, 2, 4, 4)), **x)
    torch.testing.assert_close(o0, o)
    ob, sb = run(impl, **{n: t.to(torch.bfloat16) for n, t in x.items()})
    assert ob.dtype == torch.bfloat16 and isinstance(sb, tuple)
    assert [t.dtype for t in sb] == [torch.float32, torch.float32]
    assert sb[0].shape == (1, 2, 4, 13) and sb[1].shape == (1, 2, 4, 4)


def _call(**over):
    x = make_inputs(1, 4, 2, 3, grad=False, init=False)
    args = {n: over.pop(n, x[n]) for n in ("q", "k", "v", "beta")}
    return delta_delta(args["q"], args["k"], args["v"], args["beta"], **over)


@pytest.mark.parametrize(
    "over, match",
    [
        (dict(v=torch.rand(1, 4, 2, 9)), r"v must have last dim 3d\+1 = 10"),
        (dict(k=torch.rand(1, 4, 2, 4)), "q and k must have the same shape"),
        (dict(q=torch.rand(1, 4, 2)), r"q must have shape \[B, T, H, D_k\]"),
        (dict(beta=torch.rand(1, 4, 3)), "beta must have shape"),
        (dict(v=torch.rand(1, 5, 2, 10)), r"v must share \[B, T, H\]"),
        (dict(initial_state=torch.zeros(1, 2, 3, 10)), "initial_state must be None or a tuple"),
        (dict(initial_state=(torch.zeros(1, 2, 3, 10), torch.zeros(1, 2, 3, 10))), "initial_state.S2"),
        (dict(initial_state=(torch.zeros(1, 2, 10, 3), torch.zeros(1, 2, 3, 3))), "initial_state.S1"),
        (dict(impl="bogus"), "impl must be one of"),
        (dict(chunk_size=0), "chunk_size must be a positive int"),
    ],
)
def test_bad_inputs(over, match):
    with pytest.raises(ValueError, match=match):
        _call(**over)
