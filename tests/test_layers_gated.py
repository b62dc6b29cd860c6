"""The gated-deltanet layer, layer-specific checks: the equations of its module docstring written out step by step,
Mamba2's initialisation of the decay, its options (state layout, the layer contract with each option switched,
bad values). The contract at the defaults (whole = steps = halves, resets, padding, gradients through carried
state, reference = auto) runs in test_layers_fwp.py with every other fast-weight layer. float64 throughout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fastweights.layers import build_layer

from .helpers import shape_id
from .test_layers_fwp import test_whole_equals_steps_equals_halves as whole_equals_steps_equals_halves

B, T, D_MODEL, H = 2, 11, 32, 4
d = D_MODEL // H
DIMS = shape_id(B=B, T=T, D=D_MODEL, H=H)


def make(seed=0, **opts):
    torch.manual_seed(seed)
    return build_layer("gated-deltanet", d_model=D_MODEL, num_heads=H, **opts).double()


def inputs(t=T, seed=1):
    return torch.randn(B, t, D_MODEL, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("opts", [{}, {"use_short_conv": False, "use_gate": False, "expand_v": 1},
                                  {"conv_bias": True, "conv_size": 2}],
                         ids=lambda o: "-".join([*(f"{k}={v}" for k, v in o.items()), DIMS]) or DIMS)
def test_matches_the_equations_step_by_step(opts):
    """Each quantity of the module docstring computed on its own, one step at a time, from a carried state."""
    layer = make(**opts)
    x = inputs()
    _, state = layer(inputs(t=5, seed=2))  # start from a carried state (and a filled convolution buffer)
    y, final = layer(x, state)

    dv, K = layer.value_dim, layer.conv_size
    z = layer.in_proj(x).view(B, T, H, -1)
    qkv, gate, beta, a = z.split([2 * d + dv, z.shape[-1] - 2 * d - dv - 2, 1, 1], dim=-1)
    S = state[0]
    if layer.use_short_conv:
        past = torch.cat([state[1], qkv], dim=1)  # [B, K - 1 + T, H, c]
        qkv = torch.stack([sum(layer.conv_weight[j] * past[:, t + j] for j in range(K)) for t in range(T)], dim=1)
        if opts.get("conv_bias"):
            qkv = qkv + layer.conv_bias
    q, k, v = F.silu(qkv).split([d, d, dv], dim=-1)
    outs = []
    for t in range(T):
        qt = q[:, t] / q[:, t].norm(dim=-1, keepdim=True) / math.sqrt(d)  # [B, H, d]
        kt = k[:, t] / k[:, t].norm(dim=-1, keepdim=True)
        bt = torch.sigmoid(beta[:, t, :, 0])  # [B, H]
        at = torch.exp(-torch.exp(layer.A_log) * F.softplus(a[:, t, :, 0] + layer.dt_bias))
        old = torch.einsum("bhk,bhkv->bhv", kt, at[..., None, None] * S)
        S = at[..., None, None] * S + torch.einsum("bhk,bhv->bhkv", kt, bt[..., None] * (v[:, t] - old))
        o = torch.einsum("bhk,bhkv->bhv", qt, S)
        o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + layer.norm_eps) * layer.norm_weight
        if layer.use_gate:
            o = o * F.silu(gate[:, t])
        outs.append(o.flatten(1))
    torch.testing.assert_close(y, layer.out_proj(torch.stack(outs, dim=1)), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(final[0], S, rtol=1e-9, atol=1e-12)
    if layer.use_short_conv:
        torch.testing.assert_close(final[1], z[:, T - (K - 1):, :, :2 * d + dv], rtol=0, atol=0)


def test_mamba2_decay_initialisation():
    """A ~ U(0, 16) (A_log = log A) and softplus(dt_bias) log-uniform in [0.001, 0.1], one per head."""
    torch.manual_seed(0)
    layer = build_layer("gated-deltanet", d_model=4096, num_heads=4096, head_dim=2, use_short_conv=False)
    A, dt = layer.A_log.exp(), F.softplus(layer.dt_bias)
    assert layer.A_log.shape == layer.dt_bias.shape == (4096,)
    assert 0 < A.min() and A.max() < 16 and abs(A.mean().item() - 8) < 0.3
    assert 1e-3 <= dt.min() and dt.max() <= 0.1 + 1e-6
    log_dt = dt.log()  # uniform in [log 0.001, log 0.1]: mean at log 0.01
    assert abs(log_dt.mean().item() - math.log(1e-2)) < 0.1


def test_options_shape_the_state_and_the_parameters():
    _, (S, conv) = make()(inputs())
    assert S.shape == (B, H, d, 2 * d) and conv.shape == (B, 3, H, 4 * d)  # expand_v=2, conv_size=4
    _, (S, conv) = make(expand_v=1, conv_size=2)(inputs())
    assert S.shape == (B, H, d, d) and conv.shape == (B, 1, H, 3 * d)
    _, state = make(use_short_conv=False)(inputs())
    assert len(state) == 1
    names = dict(make().named_parameters()).keys()
    assert names == {"in_proj.weight", "out_proj.weight", "conv_weight", "A_log", "dt_bias", "norm_weight"}
    assert "conv_bias" in dict(make(conv_bias=True).named_parameters())
    count = lambda layer: sum(p.numel() for p in layer.parameters())  # noqa: E731
    assert count(make()) - count(make(use_gate=False)) == D_MODEL * H * 2 * d  # the output gate's projection


CONFIGS = [{"use_short_conv": False}, {"conv_size": 1}, {"conv_size": 2, "conv_bias": True}, {"use_gate": False},
           {"expand_v": 1.5}, {"impl": "reference"}]


@pytest.mark.parametrize("opts", CONFIGS, ids=lambda o: "-".join([*(f"{k}={v}" for k, v in o.items()), DIMS]))
def test_options_keep_the_layer_contract(opts):
    """Whole sequence = one token at a time = two halves, with each option switched (test_layers_fwp's check)."""
    whole_equals_steps_equals_halves("gated-deltanet", opts)


def test_every_parameter_gets_a_gradient():
    layer = make(conv_bias=True)
    y, state = layer(inputs())
    (y.pow(2).sum() + state[0].sum()).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("opts,field", [
    ({"expand_v": 0}, "expand_v"), ({"expand_v": 1.3}, "expand_v"), ({"expand_v": "2"}, "expand_v"),
    ({"use_short_conv": "yes"}, "use_short_conv"), ({"conv_size": 0}, "conv_size"), ({"conv_bias": 1}, "conv_bias"),
    ({"conv_bias": True, "use_short_conv": False}, "conv_bias"), ({"use_gate": None}, "use_gate"),
    ({"norm_eps": 0}, "norm_eps"), ({"impl": "step"}, "impl"), ({"head_dim": 0}, "head_dim"),
], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) if isinstance(o, dict) else o)
def test_bad_option_values_raise(opts, field):
    with pytest.raises(ValueError, match=field):
        build_layer("gated-deltanet", d_model=D_MODEL, num_heads=H, **opts)
