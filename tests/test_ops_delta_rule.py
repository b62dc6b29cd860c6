"""delta_rule, op-specific checks: chunk sizes with D_k != D_v, bfloat16, the default impl, bad inputs. The generic
checks (chunk vs reference on a shape grid, gradcheck, two halves) are in test_ops_registry.py."""

import pytest
import torch
import torch.nn.functional as F

from fastweights.ops import delta_rule

from .helpers import assert_impls_match, gradcheck_op, shape_id


def make_inputs(B, T, H, Dk, Dv=None, dtype=torch.float32, seed=0, with_state=True):
    g = torch.Generator().manual_seed(seed)
    Dv = Dk if Dv is None else Dv
    x = dict(q=torch.randn(B, T, H, Dk, generator=g, dtype=dtype),
             k=F.normalize(torch.randn(B, T, H, Dk, generator=g, dtype=dtype), dim=-1),
             v=torch.randn(B, T, H, Dv, generator=g, dtype=dtype),
             beta=torch.sigmoid(torch.randn(B, T, H, generator=g, dtype=dtype)))
    if with_state:
        x["s0"] = torch.randn(B, H, Dk, Dv, generator=g, dtype=dtype) * 0.1
    return {n: t.requires_grad_() for n, t in x.items()}


def run(impl, q, k, v, beta, s0=None, chunk_size=32, **kw):
    kw.setdefault("output_final_state", True)
    return delta_rule(q, k, v, beta, initial_state=s0, impl=impl, chunk_size=chunk_size, **kw)


@pytest.mark.parametrize("T,C", [(1, 32), (63, 16), (100, 32), (100, 64), (37, 8)],
                         ids=[shape_id(T=t, C=c) for t, c in [(1, 32), (63, 16), (100, 32), (100, 64), (37, 8)]])
def test_chunk_matches_reference_float64_chunk_sizes(T, C):
    x = make_inputs(2, T, 2, 16, Dv=24, dtype=torch.float64)
    assert_impls_match(lambda impl, **a: run(impl, **a, chunk_size=C), x, fast="chunk", atol=1e-10, rtol=1e-9)
    assert_impls_match(run, x, fast="fused", atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("impl", ["reference", "chunk", "fused"])
def test_gradcheck_rectangular(impl):
    """D_k != D_v (the registry's gradcheck is square)."""
    x = make_inputs(1, 7, 2, 4, Dv=3, dtype=torch.float64)
    gradcheck_op(lambda i, **a: run(i, **a, chunk_size=4), impl, x)


def test_bfloat16_inputs_run_in_float32():
    x = make_inputs(2, 40, 2, 16, with_state=False)
    lo = {n: t.detach().to(torch.bfloat16) for n, t in x.items()}
    o, s = delta_rule(**lo, output_final_state=True)
    assert o.dtype == torch.bfloat16 and s.dtype == torch.float32
    ref, _ = delta_rule(**{n: t.float() for n, t in lo.items()}, impl="reference")
    torch.testing.assert_close(o.float(), ref, atol=2e-2, rtol=2e-2)


def test_default_impl_on_the_cpu_is_fused_and_no_head_size_cap():
    x = make_inputs(1, 20, 1, 160, Dv=130, with_state=False)
    o_auto, s_auto = run("auto", **x)
    o_fused, s_fused = run("fused", **x)
    assert torch.equal(o_auto, o_fused) and torch.equal(s_auto, s_fused)
    assert_impls_match(run, x, fast="auto", atol=5e-5, rtol=1e-4)
    assert_impls_match(run, x, fast="chunk", atol=5e-5, rtol=1e-4)


def test_fused_long_sequence_float32_stays_close_to_float64():
    """The fused backward rebuilds S_{t-1} = S_t - k u^T, undoing each write: over 2,000 float32 steps the
    rounding that accumulates must stay small against the float64 reference's gradients."""
    x = make_inputs(1, 2000, 2, 16, with_state=False)
    lo = {n: t.detach().requires_grad_() for n, t in x.items()}
    hi = {n: t.detach().double().requires_grad_() for n, t in x.items()}
    o, _ = run("fused", **lo)
    o_ref, _ = run("chunk", **hi)
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(o.shape, generator=gen)
    g = torch.autograd.grad((o * w).sum(), list(lo.values()))
    g_ref = torch.autograd.grad((o_ref * w.double()).sum(), list(hi.values()))
    torch.testing.assert_close(o.double(), o_ref, atol=1e-4, rtol=1e-4)
    for n, a, b in zip(lo, g, g_ref):
        torch.testing.assert_close(a.double(), b, atol=1e-3, rtol=1e-3, msg=n)


@pytest.mark.parametrize("bad,match", [
    (dict(k=torch.zeros(2, 5, 2, 7)), "same shape"),
    (dict(beta=torch.zeros(2, 5, 3)), "beta"),
    (dict(v=torch.zeros(2, 4, 2, 8)), "share"),
    (dict(q=torch.zeros(2, 5, 8)), r"\[B, T, H, D_k\]"),
    (dict(initial_state=torch.zeros(2, 2, 8, 9)), "initial_state"),
    (dict(impl="cuda-magic"), "impl"),
    (dict(chunk_size=0), "chunk_size"),
])
def test_bad_inputs_raise_value_error(bad, match):
    args = dict(q=torch.zeros(2, 5, 2, 8), k=torch.zeros(2, 5, 2, 8), v=torch.zeros(2, 5, 2, 8),
                beta=torch.zeros(2, 5, 2))
    kw = {n: bad.pop(n) for n in list(bad) if n in ("initial_state", "impl", "chunk_size")}
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        delta_rule(**args, **kw)
