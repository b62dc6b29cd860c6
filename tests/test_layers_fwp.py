"""The fast-weight layers: state carrying (whole == steps == halves), done-mask resets, padding,
gradients through carried state, option validation, and the options themselves. float64 throughout."""

from __future__ import annotations

import math

import pytest
import torch

from fastweights.layers import build_layer, detach_state, layer_names, reset_state
from fastweights.layers import fwp

from .helpers import shape_id

# every registered fast-weight layer (the baselines have their own tests)
NAMES = [n for n in layer_names() if isinstance(build_layer(n, d_model=8, num_heads=2), fwp.FastWeightLayer)]
B, T, D_MODEL, H = 2, 17, 32, 4
DIMS = shape_id(B=B, T=T, D=D_MODEL, H=H)
TOL = dict(rtol=1e-5, atol=1e-9)

# (name, options) for the consistency tests: every layer at its defaults, plus the non-default options
CONFIGS = [(n, {}) for n in NAMES] + [
    ("lt", {"normalize": False}),
    ("lt", {"feature_map": "dpfp", "nu": 2}),
    ("lt", {"feature_map": "favor", "m": 16}),
    ("deltanet", {"feature_map": "dpfp", "nu": 2}),
    ("deltanet", {"feature_map": "favor", "m": 16}),
    ("delta-mlp", {"depth": 1, "hidden": 12}),
    ("lt", {"impl": "reference"}),
    ("rdn", {"head_dim": 6}),
]


def config_id(name, opts):
    return "-".join([name, *(f"{k}={v}" for k, v in opts.items()), DIMS])


def make(name, seed=0, **opts):
    torch.manual_seed(seed)
    return build_layer(name, d_model=D_MODEL, num_heads=H, **opts).double()


def inputs(t=T, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(B, t, D_MODEL, generator=g, dtype=torch.float64)


def assert_states_close(a, b, **tol):
    assert isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        torch.testing.assert_close(x, y, **(tol or TOL), msg=lambda m, i=i: f"state[{i}]: {m}")


# ----------------------------------------------------------------------------------------------
# structure


def test_names_come_from_the_layer_registry():
    assert {getattr(fwp, c).layer_name for c in fwp.__all__} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES, ids=[f"{n}-{DIMS}" for n in NAMES])
def test_shapes_and_state_layout(name):
    layer = make(name)
    assert isinstance(layer, fwp.FastWeightLayer) and layer.layer_name == name
    y, state = layer(inputs())
    assert y.shape == (B, T, D_MODEL) and y.dtype == torch.float64
    assert isinstance(state, tuple) and all(s.shape[0] == B for s in state)
    assert all(torch.isfinite(s).all() for s in state) and torch.isfinite(y).all()
    # float32 works too (the default dtype of a fresh layer)
    torch.manual_seed(0)
    y32, _ = build_layer(name, d_model=D_MODEL, num_heads=H)(inputs().float())
    assert y32.dtype == torch.float32 and torch.isfinite(y32).all()


def test_state_shapes_of_options():
    d = D_MODEL // H
    _, (S,) = make("deltanet", feature_map="dpfp", nu=3)(inputs())
    assert S.shape == (B, H, 2 * d * 3, d)
    _, (S,) = make("deltanet", feature_map="favor", m=5)(inputs())
    assert S.shape == (B, H, 10, d)
    _, (S, z) = make("lt")(inputs())
    assert S.shape == (B, H, d, d) and z.shape == (B, H, d)
    _, st = make("delta-mlp", depth=3)(inputs())
    assert [tuple(s.shape) for s in st] == [(B, H, d, 4 * D_MODEL // H), (B, H, 4 * D_MODEL // H, d)] * 3
    _, (S1, S2) = make("delta-delta")(inputs())
    assert S1.shape == (B, H, d, 3 * d + 1) and S2.shape == (B, H, d, d)


def test_rdn_recurrent_init_and_delta_mlp_ln_params():
    torch.manual_seed(0)
    layer = build_layer("rdn", d_model=256, num_heads=4)  # d = 64
    params = dict(layer.named_parameters())
    for n in ("R_q", "R_k", "R_v", "r_beta"):
        assert n in params
    R = torch.cat([layer.R_q.flatten(), layer.R_k.flatten(), layer.R_v.flatten()])
    assert layer.R_q.shape == (4, 64, 64) and layer.r_beta.shape == (4, 64)
    assert abs(R.std().item() - 1 / math.sqrt(64)) < 0.005 and abs(R.mean().item()) < 0.005
    mlp = make("delta-mlp", depth=3)
    assert mlp.ln_weight.shape == (3, D_MODEL // H) and mlp.ln_bias.shape == (3, D_MODEL // H)
    assert {"ln_weight", "ln_bias"} <= dict(mlp.named_parameters()).keys()


# ----------------------------------------------------------------------------------------------
# carrying the state


@pytest.mark.parametrize("name,opts", CONFIGS, ids=[config_id(n, o) for n, o in CONFIGS])
def test_whole_equals_steps_equals_halves(name, opts):
    layer = make(name, **opts)
    x = inputs()
    y, state = layer(x)

    outs, s = [], None
    for t in range(T):
        o, s = layer(x[:, t: t + 1], s)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), y, **TOL)
    assert_states_close(s, state)

    split = 9
    y1, s1 = layer(x[:, :split])
    y2, s2 = layer(x[:, split:], s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, **TOL)
    assert_states_close(s2, state)


@pytest.mark.parametrize("name", NAMES, ids=[f"{n}-{DIMS}" for n in NAMES])
def test_done_mask_reset_equals_fresh_start(name):
    layer = make(name)
    x1, x2 = inputs(seed=1), inputs(t=7, seed=2)
    _, s1 = layer(x1)
    done = torch.tensor([True, False])
    reset = reset_state(s1, done)
    y, s = layer(x2, reset)

    y_fresh, s_fresh = layer(x2[:1])  # row 0: starts afresh
    torch.testing.assert_close(y[:1], y_fresh, **TOL)
    assert_states_close(tuple(t[:1] for t in s), s_fresh)

    y_kept, s_kept = layer(x2, s1)  # row 1: untouched by the reset
    torch.testing.assert_close(y[1:], y_kept[1:], **TOL)
    assert_states_close(tuple(t[1:] for t in s), tuple(t[1:] for t in s_kept))

    # an all-zero state is a fresh start for every row
    y0, s0 = layer(x2, tuple(torch.zeros_like(t) for t in s1))
    y_none, s_none = layer(x2)
    torch.testing.assert_close(y0, y_none, **TOL)
    assert_states_close(s0, s_none)


@pytest.mark.parametrize("name", NAMES, ids=[f"{n}-{DIMS}" for n in NAMES])
def test_padding_never_changes_valid_outputs(name):
    layer = make(name)
    lengths = [11, 17]
    x = inputs()
    padded = x.clone()
    padded[0, lengths[0]:] = 5.0 * torch.randn(T - lengths[0], D_MODEL, dtype=torch.float64)  # any values
    y, _ = layer(padded)
    for b, n in enumerate(lengths):
        y_alone, _ = layer(x[b: b + 1, :n])
        torch.testing.assert_close(y[b: b + 1, :n], y_alone, **TOL)
    # appending padding after a whole sequence changes nothing before it
    more = torch.cat([x, 3.0 * inputs(t=6, seed=9)], dim=1)
    torch.testing.assert_close(layer(more)[0][:, :T], layer(x)[0], **TOL)


@pytest.mark.parametrize("name", NAMES, ids=[f"{n}-{DIMS}" for n in NAMES])
def test_gradient_through_carried_state_not_across_detach(name):
    layer = make(name)
    x1 = inputs(t=8, seed=1).requires_grad_()
    x2 = inputs(t=5, seed=2).requires_grad_()
    _, s1 = layer(x1)
    y2, _ = layer(x2, s1)
    g1, g2 = torch.autograd.grad(y2.pow(2).sum(), [x1, x2])
    assert g1.abs().sum() > 0 and g2.abs().sum() > 0  # within a segment: flows into segment 1

    _, s1 = layer(x1)
    y2, _ = layer(x2, detach_state(s1))
    g1, g2 = torch.autograd.grad(y2.pow(2).sum(), [x1, x2], allow_unused=True)
    assert g1 is None and g2.abs().sum() > 0  # across a detached boundary: nothing


# ----------------------------------------------------------------------------------------------
# options


BAD_OPTIONS = [
    ("lt", {"feature_map": "softmax"}, "feature_map"),
    ("lt", {"feature_map": "dpfp", "nu": 0}, "nu"),
    ("lt", {"feature_map": "favor", "m": -1}, "m"),
    ("lt", {"nu": 2}, "nu"),  # nu without dpfp: never silently ignored
    ("lt", {"normalize": "yes"}, "normalize"),
    ("deltanet", {"feature_map": "elu1"}, "feature_map"),
    ("deltanet", {"feature_map": "favor", "m": 2.5}, "m"),
    ("deltanet", {"feature_map": "dpfp", "m": 4}, "m"),
    ("delta-mlp", {"depth": 0}, "depth"),
    ("delta-mlp", {"hidden": 0}, "hidden"),
    ("delta-mlp", {"depth": True}, "depth"),
    ("rdn", {"head_dim": 0}, "head_dim"),
    ("delta-rnn", {"impl": "chunk"}, "impl"),
    ("delta-lstm", {"impl": "cuda"}, "impl"),
    ("delta-delta", {"impl": "step"}, "impl"),
    ("deltanet", {"impl": None}, "impl"),
]


@pytest.mark.parametrize("name,opts,field", BAD_OPTIONS, ids=[config_id(n, o) for n, o, _ in BAD_OPTIONS])
def test_bad_option_values_raise(name, opts, field):
    with pytest.raises(ValueError, match=field):
        build_layer(name, d_model=D_MODEL, num_heads=H, **opts)


@pytest.mark.parametrize("name", NAMES, ids=[f"{n}-{DIMS}" for n in NAMES])
def test_unknown_option_and_bad_sizes_raise(name):
    with pytest.raises(ValueError, match="bogus"):
        build_layer(name, d_model=D_MODEL, num_heads=H, bogus=1)
    with pytest.raises(ValueError, match="num_heads"):
        build_layer(name, d_model=D_MODEL, num_heads=5)
    with pytest.raises(ValueError, match="d_model"):
        build_layer(name, d_model=0, num_heads=H)


def test_bad_state_and_input_raise():
    layer = make("delta-rnn")
    _, s = layer(inputs())
    with pytest.raises(ValueError, match="state"):
        layer(inputs(), s[:2])
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(B, T, D_MODEL + 1, dtype=torch.float64))


@pytest.mark.parametrize("normalize", [False, True], ids=[f"normalize={n}-{DIMS}" for n in (False, True)])
def test_lt_normalize_matches_the_equation(normalize):
    layer = make("lt", normalize=normalize)
    x = inputs()
    y, _ = layer(x)
    d = D_MODEL // H
    q, k, v = layer.in_proj(x).view(B, T, H, 3, d).unbind(3)
    q, k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    scores = torch.einsum("bthd,bshd->bhts", q, k).tril()  # phi(q_t) . phi(k_s), s <= t
    if normalize:
        scores = scores / (scores.sum(-1, keepdim=True) + 1e-6)
    o = torch.einsum("bhts,bshd->bthd", scores, v)
    torch.testing.assert_close(y, layer.out_proj(o.flatten(2)), **TOL)


def test_deltanet_feature_maps_are_used():
    x = inputs()
    y_default, _ = make("deltanet")(x)
    y_dpfp, _ = make("deltanet", feature_map="dpfp", nu=2)(x)
    y_favor, _ = make("deltanet", feature_map="favor", m=16)(x)
    assert not torch.allclose(y_default, y_dpfp) and not torch.allclose(y_default, y_favor)
    assert make("deltanet", feature_map="favor", m=16).phi.normalize  # sum-normalised keys for the delta rule


IMPL_CONFIGS = [(n, {}) for n in NAMES] + [("lt", {"normalize": False}), ("deltanet", {"feature_map": "dpfp"})]


@pytest.mark.parametrize("name,opts", IMPL_CONFIGS, ids=[config_id(n, o) for n, o in IMPL_CONFIGS])
def test_reference_impl_equals_auto(name, opts):
    """Outputs, final states and the gradients of every parameter and of the input state agree."""
    results = []
    for impl in ("reference", "auto"):
        layer = make(name, impl=impl, **opts)
        x = inputs(t=9, seed=1).requires_grad_()
        _, s0 = make(name, **opts)(inputs(t=4, seed=3))
        s0 = tuple(t.detach().requires_grad_(t.is_floating_point()) for t in s0)  # a state may hold a bool mask
        y, s = layer(x, s0)
        g = torch.Generator().manual_seed(0)
        loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
        loss = loss + sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in s
                          if t.is_floating_point())
        params = list(layer.parameters())
        grads = torch.autograd.grad(loss, [x, *(t for t in s0 if t.requires_grad), *params])
        results.append((y, s, grads))
    (y_ref, s_ref, g_ref), (y_auto, s_auto, g_auto) = results
    torch.testing.assert_close(y_auto, y_ref, **TOL)
    assert_states_close(s_auto, s_ref)
    for i, (a, b) in enumerate(zip(g_auto, g_ref)):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m, i=i: f"grad {i}: {m}")
