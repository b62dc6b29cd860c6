"""gated_delta_rule, op-specific checks: g = 0 is the delta rule bit for bit, a small case worked by hand, g = -inf
forgets the past, strong and weak decays mixed in float32, D_k != D_v, bad inputs. The generic checks (chunk vs
reference on a shape grid with every gradient, g's included; gradcheck; two halves) are in test_ops_registry.py."""

import math

import pytest
import torch

from fastweights.ops import delta_rule, gated_delta_rule
from fastweights.ops.registry import OPS

from .helpers import assert_impls_match, gradcheck_op, run_with_grads, shape_id

SPEC = OPS["gated_delta_rule"]
IMPLS = ["reference", "chunk", "fused"]


def make_inputs(B, T, H, D, dtype=torch.float64, seed=0, with_state=True):
    """The registry's inputs by name (``s0`` for the initial state), gradients on."""
    case = SPEC.make_inputs(B, T, H, D, dtype=dtype, seed=seed, with_state=with_state)
    return {**case.inputs, **({"s0": case.initial_state["S"]} if with_state else {})}


def run(impl, q, k, v, beta, g, s0=None, chunk_size=16, **kw):
    kw.setdefault("output_final_state", True)
    return gated_delta_rule(q, k, v, beta, g, initial_state=s0, impl=impl, chunk_size=chunk_size, **kw)


def run_delta_rule(impl, q, k, v, beta, s0=None, chunk_size=16):
    return delta_rule(q, k, v, beta, initial_state=s0, output_final_state=True, impl=impl, chunk_size=chunk_size)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B,T,H,D", [(2, 37, 2, 8)], ids=[shape_id(B=2, T=37, H=2, D=8)])
def test_zero_decay_is_the_delta_rule_exactly(impl, B, T, H, D):
    """g = 0: outputs, final state and every gradient (initial state included) equal delta_rule's, bit for bit."""
    x = make_inputs(B, T, H, D, dtype=torch.float32)
    x["g"] = torch.zeros_like(x["g"], requires_grad=True)
    o, states, grads = run_with_grads(run, impl, x)
    plain = {n: t for n, t in x.items() if n != "g"}
    o_plain, states_plain, grads_plain = run_with_grads(run_delta_rule, impl, plain)
    if impl == "fused":
        # the same forward arithmetic; the backward rebuilds the states by recomputing them (gated) or by undoing
        # each write (plain), which round differently
        assert torch.equal(o, o_plain) and torch.equal(states[0], states_plain[0])
        for n in plain:
            torch.testing.assert_close(grads[n], grads_plain[n], rtol=1e-5, atol=1e-6, msg=n)
        return
    assert torch.equal(o, o_plain) and torch.equal(states[0], states_plain[0])
    for n in plain:
        assert torch.equal(grads[n], grads_plain[n]), n


@pytest.mark.parametrize("impl,chunk_size", [("reference", 16), ("chunk", 1), ("chunk", 2), ("chunk", 3)])
def test_small_case_by_hand(impl, chunk_size):
    """D_k = 2, D_v = 1, three steps: a half decay, no decay, then g = -inf (a full reset)."""
    t = lambda *rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731
    q = t([1, 1], [1, -1], [2, 0]).view(1, 3, 1, 2)
    k = t([1, 0], [0, 1], [1, 0]).view(1, 3, 1, 2)
    v = t([6], [3], [5]).view(1, 3, 1, 1)
    beta = t(0.5, 1.0, 0.25).view(1, 3, 1)
    g = t(math.log(0.5), 0.0, -math.inf).view(1, 3, 1)
    s0 = t([4], [2]).view(1, 1, 2, 1)
    # step 0: a S0 = [2, 1]; u = 0.5 (6 - 2) = 2; S1 = [4, 1]; o = 4 + 1 = 5
    # step 1: u = 1 (3 - 1) = 2; S2 = [4, 3]; o = 4 - 3 = 1
    # step 2: a = 0, so S = 0; u = 0.25 (5 - 0) = 1.25; S3 = [1.25, 0]; o = 2 * 1.25 = 2.5
    o, S = run(impl, q, k, v, beta, g, s0, chunk_size=chunk_size)
    torch.testing.assert_close(o.flatten(), t(5.0, 1.0, 2.5), rtol=0, atol=1e-12)
    torch.testing.assert_close(S.flatten(), t(1.25, 0.0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("impl,chunk_size", [("reference", 16), ("chunk", 16), ("chunk", 7), ("fused", 16)])
def test_minus_infinity_forgets_the_past(impl, chunk_size):
    """g_t0 = -inf: from step t0 on, outputs and the final state are those of a fresh start at t0 (whatever the
    earlier inputs and the initial state), and no gradient reaches what came before t0 (g's own included)."""
    x = make_inputs(2, 40, 2, 8)
    t0 = 19  # inside a chunk for both chunk sizes
    with torch.no_grad():
        x["g"][:, t0] = -math.inf
    o, S = run(impl, **x, chunk_size=chunk_size)
    later = {n: t[:, t0:] for n, t in x.items() if n != "s0"}
    o_fresh, S_fresh = run(impl, **later, chunk_size=chunk_size)
    torch.testing.assert_close(o[:, t0:], o_fresh, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(S, S_fresh, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(o[:, t0:].sum() + S.sum(), list(x.values()))
    for n, grad in zip(x, grads):
        earlier = grad if n == "s0" else grad[:, :t0 + (n == "g")]  # g_t0 itself: exp(-inf) has slope 0
        assert torch.isfinite(grad).all() and earlier.abs().max() < 1e-12, n


def test_chunk_matches_reference_when_strong_and_weak_decays_mix():
    """float32 chunk against the float64 reference where g jumps between -60 (a ~ 1e-26) and -1e-3 within the
    chunks: the decays are summed over the steps they span, so the weak ones keep their precision."""
    x = make_inputs(2, 96, 2, 16)
    gen = torch.Generator().manual_seed(3)
    strong = torch.rand(x["g"].shape, generator=gen, dtype=torch.float64) < 0.2
    g = torch.where(strong, -60.0, -1e-3).double()
    o_ref, S_ref = run("reference", **{**x, "g": g}, chunk_size=32)
    lo = {n: t.detach().float() for n, t in {**x, "g": g}.items()}
    for impl in ("chunk", "fused"):
        o, S = run(impl, **lo, chunk_size=32)
        torch.testing.assert_close(o.double(), o_ref, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(S.double(), S_ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("T,C", [(1, 32), (63, 16), (100, 32), (37, 8)],
                         ids=[shape_id(T=t, C=c) for t, c in [(1, 32), (63, 16), (100, 32), (37, 8)]])
def test_chunk_and_fused_match_reference_rectangular(T, C):
    """D_k = 16, D_v = 24 (the registry's cases are square) at several chunk sizes; the fused path (whose backward
    recomputes states in segments of 16 steps) at the same T."""
    x = make_inputs(2, T, 2, 16)
    gen = torch.Generator().manual_seed(1)
    x["v"] = torch.randn(2, T, 2, 24, generator=gen, dtype=torch.float64, requires_grad=True)
    x["s0"] = (0.1 * torch.randn(2, 2, 16, 24, generator=gen, dtype=torch.float64)).requires_grad_()
    assert_impls_match(lambda impl, **a: run(impl, **a, chunk_size=C), x, fast="chunk", atol=1e-10, rtol=1e-9)
    assert_impls_match(run, x, fast="fused", atol=1e-10, rtol=1e-9)


def test_fused_gradcheck_across_segments():
    """T = 35: three of the fused backward's recompute segments (16 + 16 + 3 steps), every input's gradient."""
    x = make_inputs(1, 35, 1, 3)
    gradcheck_op(run, "fused", x)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_rectangular(impl):
    x = make_inputs(1, 7, 2, 4)
    gen = torch.Generator().manual_seed(2)
    x["v"] = torch.randn(1, 7, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    x["s0"] = (0.1 * torch.randn(1, 2, 4, 3, generator=gen, dtype=torch.float64)).requires_grad_()
    gradcheck_op(lambda i, **a: run(i, **a, chunk_size=3), impl, x)


def test_default_impl_on_the_cpu_is_fused():
    x = make_inputs(1, 20, 1, 40, dtype=torch.float32, with_state=False)
    o_auto, s_auto = run("auto", **x)
    o_fused, s_fused = run("fused", **x)
    assert torch.equal(o_auto, o_fused) and torch.equal(s_auto, s_fused)
    assert_impls_match(lambda impl, **a: run(impl, **a, chunk_size=32), x, fast="auto", atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("bad,match", [
    (dict(g=torch.full((2, 5, 2), 0.1)), "g must be <= 0"),
    (dict(g=torch.zeros(2, 5, 3)), "g must have shape"),
    (dict(g=torch.zeros(2, 5, 2, 1)), r"g must have shape \[B, T, H\]"),
    (dict(g=torch.zeros(2, 5, 2, dtype=torch.int64)), "g must be a floating-point"),
    (dict(g=torch.zeros(2, 5, 2, dtype=torch.float64)), "g has dtype"),
    (dict(beta=torch.zeros(2, 5, 3)), "beta"),
    (dict(impl="bogus"), "impl"),
    (dict(chunk_size=0), "chunk_size"),
])
def test_bad_inputs_raise_value_error(bad, match):
    args = dict(q=torch.zeros(2, 5, 2, 8), k=torch.zeros(2, 5, 2, 8), v=torch.zeros(2, 5, 2, 8),
                beta=torch.zeros(2, 5, 2), g=torch.zeros(2, 5, 2))
    kw = {n: bad.pop(n) for n in list(bad) if n in ("impl", "chunk_size")}
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        gated_delta_rule(**args, **kw)
