"""Recurrent Delta Net op, op-specific checks: gradients through a carried state, partial initial states, defaults,
non-contiguous and bfloat16 inputs, saved memory, bad shapes. The generic checks (fused vs reference, gradcheck,
two halves) are in test_ops_registry.py."""

from __future__ import annotations

import pytest
import torch

from fastweights.ops.rdn import recurrent_delta_rule


SEQ = ("xq", "xk", "xv", "xbeta")
WEIGHTS = ("Rq", "Rk", "Rv", "rbeta")


def run(impl, xq, xk, xv, xbeta, Rq, Rk, Rv, rbeta, S0=None, y0=None, initial_state=None,
        output_final_state=True):
    if initial_state is None and (S0 is not None or y0 is not None):
        initial_state = (S0, y0)
    return recurrent_delta_rule(xq, xk, xv, xbeta, Rq, Rk, Rv, rbeta, initial_state=initial_state,
                                output_final_state=output_final_state, impl=impl)


def make_inputs(B, T, H, D, dtype=torch.float32, state=True, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=1.0: torch.randn(*s, generator=g, dtype=torch.float64).mul(scale).to(dtype)  # noqa: E731
    x = {
        "xq": r(B, T, H, D), "xk": r(B, T, H, D), "xv": r(B, T, H, D), "xbeta": r(B, T, H),
        # the paper's init for the recurrent weights: N(0, 1/sqrt(D))
        "Rq": r(H, D, D, scale=D ** -0.5), "Rk": r(H, D, D, scale=D ** -0.5),
        "Rv": r(H, D, D, scale=D ** -0.5), "rbeta": r(H, D, scale=D ** -0.5),
    }
    if state:
        x["S0"] = r(B, H, D, D, scale=0.5)
        x["y0"] = r(B, H, D)
    for t in x.values():
        t.requires_grad_(requires_grad)
    return x


def test_two_halves_gradients_flow_through_carried_state():
    """Gradients of the whole sequence equal those of two halves chained through the state."""
    x = make_inputs(2, 30, 2, 8, torch.float64, state=True, seed=3)
    w = {n: x[n] for n in WEIGHTS}
    o, (S, y) = run("fused", *(x[n] for n in SEQ), **w, S0=x["S0"], y0=x["y0"])
    names = list(x)
    g_whole = torch.autograd.grad(o.square().sum() + S.sum() + y.sum(), [x[n] for n in names])
    a = {n: x[n][:, :11] for n in SEQ}
    b = {n: x[n][:, 11:] for n in SEQ}
    o1, s1 = run("fused", **a, **w, S0=x["S0"], y0=x["y0"])
    o2, (S2, y2) = run("fused", **b, **w, initial_state=s1)
    g_split = torch.autograd.grad(o1.square().sum() + o2.square().sum() + S2.sum() + y2.sum(),
                                  [x[n] for n in names])
    for n, ga, gb in zip(names, g_whole, g_split):
        torch.testing.assert_close(gb, ga, atol=1e-10, rtol=1e-8, msg=lambda m, n=n: f"grad {n}: {m}")


def test_partial_initial_state_gets_gradient():
    x = make_inputs(2, 9, 2, 8, torch.float64, state=True, seed=4)
    for impl in ("reference", "fused"):
        o, _ = recurrent_delta_rule(*(x[n] for n in SEQ + WEIGHTS), initial_state=(None, x["y0"]), impl=impl)
        (gy0,) = torch.autograd.grad(o.sum(), [x["y0"]])
        assert gy0.abs().sum() > 0
    # S given, y zero
    outs = [recurrent_delta_rule(*(x[n] for n in SEQ + WEIGHTS), initial_state=(x["S0"], None), impl=i)[0]
            for i in ("reference", "fused")]
    torch.testing.assert_close(outs[1], outs[0], atol=1e-12, rtol=1e-10)


def test_defaults_and_auto():
    x = make_inputs(2, 7, 3, 8, torch.float32, state=False, requires_grad=False)
    args = [x[n] for n in SEQ + WEIGHTS]
    o, s = recurrent_delta_rule(*args)
    assert s is None and o.shape == (2, 7, 3, 8) and o.dtype == torch.float32
    o_f, _ = recurrent_delta_rule(*args, impl="fused")
    assert torch.equal(o, o_f)  # auto = fused on CPU
    o_r, (S, y) = recurrent_delta_rule(*args, impl="reference", output_final_state=True)
    assert S.shape == (2, 3, 8, 8) and y.shape == (2, 3, 8)
    torch.testing.assert_close(y, o_r[:, -1])


def test_non_contiguous_inputs():
    x = make_inputs(2, 12, 3, 8, torch.float64, state=True, requires_grad=False)
    nc = {n: t.transpose(0, -1).contiguous().transpose(0, -1) if t.dim() > 1 else t for n, t in x.items()}
    assert not nc["xq"].is_contiguous()
    o1, s1 = run("fused", **nc)
    o2, s2 = run("reference", **x)
    torch.testing.assert_close(o1, o2, atol=1e-12, rtol=1e-10)
    for a, b in zip(s1, s2):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_bfloat16_smoke():
    x = make_inputs(2, 20, 2, 16, torch.bfloat16, state=False)
    o, (S, y) = run("fused", **x)
    assert o.dtype == torch.bfloat16 and S.dtype == torch.float32 and y.dtype == torch.float32
    x32 = {n: t.detach().float() for n, t in x.items()}
    o32, _ = run("reference", **x32)
    torch.testing.assert_close(o.float(), o32, atol=2e-2, rtol=2e-2)
    o.float().sum().backward()
    for n, t in x.items():
        assert t.grad is not None and t.grad.dtype == torch.bfloat16 and torch.isfinite(t.grad.float()).all(), n


def test_fused_saves_far_less_than_reference():
    """The fused path keeps O(T*D) per head for the backward; the step loop keeps O(T*D^2)."""
    x = make_inputs(2, 64, 2, 32, torch.float32, state=False)

    def saved_bytes(impl):
        seen = {}

        def pack(t):
            seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run(impl, **x)
        return sum(seen.values())

    assert saved_bytes("fused") * 4 <= saved_bytes("reference")


def _bad(**over):
    x = make_inputs(2, 5, 2, 8, torch.float32, state=False, requires_grad=False)
    x.update(over)
    return x


@pytest.mark.parametrize("impl", ["reference", "fused"])
@pytest.mark.parametrize("name,value", [
    ("Rq", torch.zeros(2, 8, 7)),
    ("Rk", torch.zeros(3, 8, 8)),
    ("Rv", torch.zeros(8, 8)),
    ("rbeta", torch.zeros(2, 8, 1)),
    ("rbeta", torch.zeros(2, 9)),
    ("xv", torch.zeros(2, 5, 2, 9)),
    ("xk", torch.zeros(2, 5, 2, 7)),
    ("xbeta", torch.zeros(2, 5, 3)),
    ("xq", torch.zeros(2, 5, 2)),
], ids=lambda v: v if isinstance(v, str) else "x".join(map(str, v.shape)))
def test_bad_shapes(impl, name, value):
    with pytest.raises(ValueError, match=name):
        run(impl, **_bad(**{name: value}))


def test_bad_state_and_impl():
    x = _bad()
    with pytest.raises(ValueError, match="initial_state.S"):
        run("fused", **x, initial_state=(torch.zeros(2, 2, 8, 7), torch.zeros(2, 2, 8)))
    with pytest.raises(ValueError, match="initial_state.y"):
        run("fused", **x, initial_state=(torch.zeros(2, 2, 8, 8), torch.zeros(2, 8)))
    with pytest.raises(ValueError, match="initial_state"):
        run("fused", **x, initial_state=torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="impl"):
        run("chunk", **x)
    with pytest.raises(ValueError, match="Rq"):
        run("fused", **{**x, "Rq": torch.zeros(2, 8, 8, dtype=torch.int64)})


def test_gradient_from_final_state_only():
    """A loss on the final state alone (no gradient reaching y) flows back into every input."""
    x = make_inputs(2, 16, 2, 8, torch.float64, state=True, seed=5)
    grads = {}
    for impl in ("reference", "fused"):
        _, (S, y) = run(impl, **x)
        grads[impl] = torch.autograd.grad(S.square().sum() + y.sum(), list(x.values()))
    for n, a, b in zip(x, grads["fused"], grads["reference"]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8, msg=lambda m, n=n: f"grad {n}: {m}")
