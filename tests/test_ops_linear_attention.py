"""linear_attention, op-specific checks: D_k != D_v, the normalised read against its formula, bad arguments. The
generic checks (chunk vs reference, plain and normalised, gradcheck, two halves) are in test_ops_registry.py."""

import pytest
import torch
import torch.nn.functional as F

from fastweights.ops import linear_attention

from .helpers import assert_impls_match


def make_inputs(B, T, H, Dk, Dv=None, dtype=torch.float32, seed=0, with_state=True):
    g = torch.Generator().manual_seed(seed)
    Dv = Dk if Dv is None else Dv
    x = dict(q=F.elu(torch.randn(B, T, H, Dk, generator=g, dtype=dtype)) + 1,
             k=(F.elu(torch.randn(B, T, H, Dk, generator=g, dtype=dtype)) + 1) / Dk,
             v=torch.randn(B, T, H, Dv, generator=g, dtype=dtype))
    if with_state:
        x["s0"] = torch.randn(B, H, Dk, Dv, generator=g, dtype=dtype) * 0.1
        x["z0"] = torch.rand(B, H, Dk, generator=g, dtype=dtype)
    return {n: t.requires_grad_() for n, t in x.items()}


def run(impl, q, k, v, s0=None, z0=None, normalize=False, chunk_size=32, **kw):
    kw.setdefault("output_final_state", True)
    state = None if s0 is None else ((s0, z0) if normalize else s0)
    return linear_attention(q, k, v, normalize=normalize, initial_state=state, impl=impl,
                            chunk_size=chunk_size, **kw)


@pytest.mark.parametrize("normalize", [False, True], ids=["plain-B1-T9-H2-Dk4-Dv3", "normalized-B1-T9-H2-Dk4-Dv3"])
@pytest.mark.parametrize("fast", ["chunk", "fused"])
def test_fast_paths_match_reference_rectangular(normalize, fast):
    """D_k != D_v (the registry's cases are square), several part-filled chunks, float64."""
    x = make_inputs(1, 9, 2, 4, Dv=3, dtype=torch.float64)
    if not normalize:
        del x["z0"]
    assert_impls_match(lambda i, **a: run(i, **a, normalize=normalize, chunk_size=4), x, fast=fast,
                       atol=1e-10, rtol=1e-9)


def test_default_impl_on_the_cpu_is_fused():
    x = make_inputs(2, 40, 2, 8, dtype=torch.float32)
    o_auto, s_auto = run("auto", **x, normalize=True)
    o_fused, s_fused = run("fused", **x, normalize=True)
    assert torch.equal(o_auto, o_fused) and all(torch.equal(a, b) for a, b in zip(s_auto, s_fused))


def test_normalized_equals_explicit_formula():
    x = {n: t.detach() for n, t in make_inputs(1, 12, 1, 4, with_state=False).items()}
    o, _ = linear_attention(x["q"], x["k"], x["v"], normalize=True, eps=0.0)
    scores = (x["q"][:, :, 0] @ x["k"][:, :, 0].transpose(-1, -2)).tril()
    expect = (scores / scores.sum(-1, keepdim=True)) @ x["v"][:, :, 0]
    torch.testing.assert_close(o[:, :, 0], expect, atol=1e-5, rtol=1e-5)


def test_bad_arguments():
    q = torch.zeros(1, 3, 1, 4)
    with pytest.raises(ValueError, match="normalize"):
        linear_attention(q, q, q, normalize="yes")
    with pytest.raises(ValueError, match="initial_state"):
        linear_attention(q, q, q, normalize=True, initial_state=torch.zeros(1, 1, 4, 4))
