"""Feature maps: shapes, positivity, normalisation, DPFP by hand, FAVOR+ kernel estimate, errors."""

from __future__ import annotations


import pytest
import torch

from fastweights.ops.feature_maps import (
    DPFP,
    FAVORPlus,
    FEATURE_MAPS,
    build_feature_map,
    dpfp,
    elu1,
    elu1_sn,
    favor,
    feature_dim,
    orthogonal_gaussian,
    sum_norm,
)

OPTS = {
    "elu1-sn": {},
    "elu1": {},
    "dpfp": {"nu": 3},
    "favor": {"m": 24, "seed": 0},
    "softmax": {},
    "identity": {},
}
EXPECTED_DIM = {"elu1-sn": 8, "elu1": 8, "dpfp": 2 * 8 * 3, "favor": 48, "softmax": 8, "identity": 8}


@pytest.mark.parametrize("name", FEATURE_MAPS)
def test_shapes_and_feature_dim(name):
    d = 8
    fm = build_feature_map(name, d, **OPTS[name])
    x = torch.randn(2, 5, 3, d)
    y = fm(x)
    assert y.shape == (2, 5, 3, EXPECTED_DIM[name])
    assert feature_dim(name, d, **OPTS[name]) == EXPECTED_DIM[name] == fm.out_dim
    assert fm.in_dim == d
    assert y.dtype == x.dtype


@pytest.mark.parametrize("name", ["elu1-sn", "elu1", "favor", "softmax"])
def test_positive(name):
    # moderate inputs: for |x| >> sqrt(d) the FAVOR+ features legitimately underflow to 0 in float32
    x = torch.randn(100, 16, generator=torch.Generator().manual_seed(0))
    y = build_feature_map(name, 16, **({"seed": 1} if name == "favor" else {}))(x)
    assert (y > 0).all()


def test_dpfp_nonnegative():
    assert (build_feature_map("dpfp", 16, nu=2)(torch.randn(100, 16)) >= 0).all()


@pytest.mark.parametrize("name", ["elu1-sn", "dpfp", "favor", "softmax"])
def test_sums_to_one(name):
    opts = {"dpfp": {"nu": 2}, "favor": {"m": 32, "seed": 3}}.get(name, {})
    y = build_feature_map(name, 16, **opts)(torch.randn(50, 16, dtype=torch.float64))
    torch.testing.assert_close(y.sum(-1), torch.ones(50, dtype=torch.float64))


def test_unnormalised_variants():
    x = torch.randn(10, 4)
    torch.testing.assert_close(build_feature_map("dpfp", 4, nu=2, normalize=False)(x), dpfp(x, 2))
    fm = build_feature_map("favor", 4, m=6, seed=0, normalize=False)
    torch.testing.assert_close(fm(x), favor(x, fm.omega))
    fm_sn = build_feature_map("favor", 4, m=6, seed=0).double()  # computed as a softmax internally
    torch.testing.assert_close(fm_sn(x.double()), sum_norm(favor(x.double(), fm_sn.omega)))
    torch.testing.assert_close(build_feature_map("elu1", 4)(x), elu1(x))
    torch.testing.assert_close(build_feature_map("elu1-sn", 4)(x), sum_norm(elu1(x)))
    torch.testing.assert_close(elu1_sn(x), sum_norm(elu1(x)))
    torch.testing.assert_close(build_feature_map("identity", 4)(x), x)
    torch.testing.assert_close(build_feature_map("softmax", 4)(x), torch.softmax(x, -1))


def test_dpfp_by_hand():
    # r = [1, 2, 0, 0, 0, 3];  roll(r, 1) = [3, 1, 2, 0, 0, 0];  roll(r, 2) = [0, 3, 1, 2, 0, 0]
    x = torch.tensor([1.0, 2.0, -3.0])
    raw = torch.tensor([3.0, 2, 0, 0, 0, 0] + [0.0, 6, 0, 0, 0, 0])
    torch.testing.assert_close(dpfp(x, nu=2), raw)
    torch.testing.assert_close(dpfp(x, nu=1), raw[:6])
    torch.testing.assert_close(DPFP(3, nu=2)(x), raw / 11)


def test_orthogonal_gaussian_structure():
    d, m = 8, 20
    om = orthogonal_gaussian(m, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert om.shape == (m, d)
    for lo in (0, 8, 16):
        blk = om[lo:lo + d]
        gram = blk @ blk.t()
        off = gram - torch.diag(torch.diagonal(gram))
        assert off.abs().max() < 1e-10  # rows of a block are exactly orthogonal
    # norms are chi(d): mean of squared norms ~ d
    big = orthogonal_gaussian(4000, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert abs((big ** 2).sum(1).mean().item() / d - 1) < 0.05


def test_favor_approximates_softmax_kernel():
    torch.manual_seed(0)
    d, m = 8, 8192
    q = torch.randn(20, d, dtype=torch.float64)
    k = torch.randn(20, d, dtype=torch.float64)
    q = 0.7 * q / q.norm(dim=-1, keepdim=True)
    k = 0.7 * k / k.norm(dim=-1, keepdim=True)
    exact = torch.exp((q * k).sum(-1))
    fm = FAVORPlus(d, m, normalize=False, seed=1234).double()
    est = (fm(q) * fm(k)).sum(-1)
    torch.testing.assert_close(est, exact, rtol=0.05, atol=0.0)
    # averaged over redraws the estimate gets closer (unbiased)
    acc = est.clone()
    for _ in range(7):
        fm.redraw()
        acc += (fm(q) * fm(k)).sum(-1)
    torch.testing.assert_close(acc / 8, exact, rtol=0.02, atol=0.0)


def test_favor_seed_and_redraw():
    a, b = FAVORPlus(6, 10, seed=5), FAVORPlus(6, 10, seed=5)
    torch.testing.assert_close(a.omega, b.omega)
    before = a.omega.clone()
    a.redraw()
    assert not torch.equal(a.omega, before)
    b.redraw()
    torch.testing.assert_close(a.omega, b.omega)  # same generator stream
    c = FAVORPlus(6, 10, seed=6)
    assert not torch.equal(c.omega, FAVORPlus(6, 10, seed=5).omega)
    a.redraw(torch.Generator().manual_seed(0))
    b.redraw(torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.omega, b.omega)
    assert "omega" in a.state_dict()


def test_gradients_flow():
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    for name, opts in [("elu1-sn", {}), ("dpfp", {"nu": 2}), ("favor", {"m": 7, "seed": 0}), ("softmax", {})]:
        fm = build_feature_map(name, 5, **opts).double()
        assert torch.autograd.gradcheck(fm, (x,))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: build_feature_map("relu", 4), "name must be one of"),
        (lambda: feature_dim("nope", 4), "'nope'"),
        (lambda: build_feature_map("dpfp", 4, m=3), "no option 'm'"),
        (lambda: build_feature_map("elu1", 4, nu=2), "no option 'nu'"),
        (lambda: build_feature_map("dpfp", 4, nu=0), "nu must be a positive int, got 0"),
        (lambda: build_feature_map("dpfp", 4, nu=1.5), "nu must be a positive int, got 1.5"),
        (lambda: feature_dim("favor", 4, m=-2), "m must be a positive int, got -2"),
        (lambda: build_feature_map("favor", 4, seed="x"), "seed must be an int or None"),
        (lambda: build_feature_map("favor", 4, normalize="yes"), "normalize must be a bool"),
        (lambda: build_feature_map("elu1-sn", 0), "d must be a positive int, got 0"),
        (lambda: build_feature_map("elu1-sn", 4)(torch.randn(2, 5)), "expects last dim 4"),
        (lambda: dpfp(torch.randn(3), nu=0), "nu must be a positive int"),
        (lambda: favor(torch.randn(2, 3), torch.randn(5, 4)), "omega must have shape"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
