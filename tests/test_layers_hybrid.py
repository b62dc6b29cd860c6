"""The hybrid quadratic-linear layer ``hqlt``: the layer contract of tests/test_layers_fwp.py (run here on
hqlt with several windows and both mixes), each memory alone equal to the ``transformer`` / ``deltanet``
layer on the same projections, the constant state size, and option validation. float64 throughout."""

from __future__ import annotations

import pytest
import torch

from fastweights.layers import build_layer

from . import test_layers_fwp as contract

# (options, id); the contract's sequences are T = 17 long: windows 1, 4 and 16 are shorter, 64 longer
OPTIONS = [({}, "defaults"), ({"window": 4}, "w4"), ({"window": 1}, "w1"), ({"window": 16, "mix": "sum"}, "w16-sum"),
           ({"window": 4, "impl": "reference"}, "w4-reference"), ({"window": 4, "feature_map": "dpfp"}, "w4-dpfp")]
IDS = [f"{i}-{contract.DIMS}" for _, i in OPTIONS]
D, H = contract.D_MODEL, contract.H
d = D // H


@pytest.fixture(params=[o for o, _ in OPTIONS], ids=IDS)
def hqlt_options(request, monkeypatch):
    """Makes the contract's ``make(name)`` build hqlt with these options."""
    make = contract.make
    monkeypatch.setattr(contract, "make", lambda name, seed=0, **o: make(name, seed, **{**request.param, **o}))
    return request.param


def test_whole_equals_steps_equals_halves(hqlt_options):
    contract.test_whole_equals_steps_equals_halves("hqlt", {})


def test_done_mask_reset_equals_fresh_start(hqlt_options):
    contract.test_done_mask_reset_equals_fresh_start("hqlt")


def test_padding_never_changes_valid_outputs(hqlt_options):
    contract.test_padding_never_changes_valid_outputs("hqlt")


def test_gradient_through_carried_state_not_across_detach(hqlt_options):
    contract.test_gradient_through_carried_state_not_across_detach("hqlt")


def test_shapes_state_layout_and_float32():
    contract.test_shapes_and_state_layout("hqlt")
    _, (S, k, v, valid) = contract.make("hqlt", window=5)(contract.inputs(t=2))
    B = contract.B
    assert S.shape == (B, H, d, d) and k.shape == (B, 4, H, d) and v.shape == k.shape
    assert valid.dtype == torch.bool and valid.tolist() == [[False, False, True, True]] * B


def test_reference_impl_equals_auto():
    """Outputs, final states and the gradients of every parameter and of the carried float states agree."""
    results = []
    _, s0 = contract.make("hqlt", window=4)(contract.inputs(t=6, seed=3))
    for impl in ("reference", "auto"):
        layer = contract.make("hqlt", window=4, impl=impl)
        x = contract.inputs(t=9, seed=1).requires_grad_()
        floats = [t.detach().requires_grad_() for t in s0[:3]]
        y, s = layer(x, (*floats, s0[3]))
        g = torch.Generator().manual_seed(0)
        loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in (y, *s[:3]))
        results.append((y, s, torch.autograd.grad(loss, [x, *floats, *layer.parameters()])))
    (y_ref, s_ref, g_ref), (y_auto, s_auto, g_auto) = results
    torch.testing.assert_close(y_auto, y_ref, **contract.TOL)
    contract.assert_states_close(s_auto, s_ref)
    for i, (a, b) in enumerate(zip(g_auto, g_ref)):
        torch.testing.assert_close(a, b, **contract.TOL, msg=lambda m, i=i: f"grad {i}: {m}")


# ----------------------------------------------------------------------------------------------
# each memory alone


def force_mix(layer, attention: float, fast_weight: float):
    """Sets the per-head mix to constant weights (exactly 0 or 1 through the gate's sigmoid)."""
    with torch.no_grad():
        if layer.mix == "sum":
            layer.mix_weight.copy_(torch.tensor([attention, fast_weight]).expand(H, 2))
        else:
            layer.mix_gate.weight.zero_()
            logits = [1e3 if w == 1 else -1e3 for w in (attention, fast_weight)]
            layer.mix_gate.bias.copy_(torch.tensor(logits).repeat(H))
    return layer


def run_halves(layer, x, split=7):
    y1, s1 = layer(x[:, :split])
    y2, s2 = layer(x[:, split:], s1)
    return torch.cat([y1, y2], 1), s2


@pytest.mark.parametrize("mix", ["gated", "sum"])
def test_attention_only_equals_windowed_transformer(mix):
    hqlt = force_mix(contract.make("hqlt", window=4, mix=mix), attention=1, fast_weight=0)
    transformer = build_layer("transformer", d_model=D, num_heads=H, window=4).double()
    q, k, v, _ = hqlt.in_proj.weight.view(H, 3 * d + 1, D).split([d, d, d, 1], dim=1)  # per-head rows
    with torch.no_grad():
        transformer.qkv.weight.copy_(torch.cat([q, k, v]).reshape(3 * H * d, D))  # [q heads, k heads, v heads]
        transformer.out.weight.copy_(hqlt.out_proj.weight)
    x = contract.inputs()
    for run in (lambda layer: layer(x), lambda layer: run_halves(layer, x)):
        (y, state), (y_ref, state_ref) = run(hqlt), run(transformer)
        torch.testing.assert_close(y, y_ref, **contract.TOL)
        contract.assert_states_close(state[1:], state_ref)  # the window's cache
    assert not torch.allclose(force_mix(hqlt, 1, 1)(x)[0], y_ref)  # the fast weight was switched off


@pytest.mark.parametrize("mix", ["gated", "sum"])
def test_fast_weight_only_equals_deltanet(mix):
    hqlt = force_mix(contract.make("hqlt", window=4, mix=mix), attention=0, fast_weight=1)
    deltanet = build_layer("deltanet", d_model=D, num_heads=H).double()
    deltanet.load_state_dict(hqlt.state_dict(), strict=False)  # the same in_proj layout, out_proj and phi
    x = contract.inputs()
    for run in (lambda layer: layer(x), lambda layer: run_halves(layer, x)):
        (y, state), (y_ref, state_ref) = run(hqlt), run(deltanet)
        torch.testing.assert_close(y, y_ref, **contract.TOL)
        contract.assert_states_close(state[:1], state_ref)
    assert not torch.allclose(force_mix(hqlt, 1, 1)(x)[0], y_ref)  # the attention was switched off


def test_gated_mix_depends_on_the_input_and_sum_mix_does_not():
    x = contract.inputs()
    gated = contract.make("hqlt").mix_weights(x)
    assert gated.shape == (contract.B, contract.T, H, 2) and not torch.allclose(gated[:, :1], gated[:, 1:2])
    assert ((gated > 0) & (gated < 1)).all()
    summed = contract.make("hqlt", mix="sum")
    assert torch.equal(summed.mix_weights(x), torch.ones(H, 2, dtype=torch.float64))
    assert {"mix_weight"} <= dict(summed.named_parameters()).keys()


# ----------------------------------------------------------------------------------------------
# memory


def state_numel(state) -> int:
    return sum(t.numel() for t in state)


def test_state_size_is_constant_from_64_to_1024_tokens_stepped_one_at_a_time():
    torch.manual_seed(0)
    layer = build_layer("hqlt", d_model=16, num_heads=2)  # window 64, float32
    x = torch.randn(1, 1024, 16)
    sizes, state = {}, None
    with torch.no_grad():
        for t in range(1024):
            _, state = layer(x[:, t:t + 1], state)
            if t + 1 in (1, 64, 65, 512, 1024):
                sizes[t + 1] = state_numel(state)
    assert len(set(sizes.values())) == 1, sizes
    assert state[1].shape == (1, 63, 2, 8) and bool(state[3].all())  # the window is full, nothing more kept
    transformer = build_layer("transformer", d_model=16, num_heads=2)  # for contrast: its cache grows
    assert state_numel(transformer(x[:, :1024])[1]) > 8 * state_numel(transformer(x[:, :64])[1])


# ----------------------------------------------------------------------------------------------
# options


@pytest.mark.parametrize("opts,field", [({"window": 0}, "window"), ({"window": None}, "window"),
                                        ({"window": 2.5}, "window"), ({"mix": "mean"}, "mix"),
                                        ({"mix": None}, "mix"), ({"feature_map": "elu1"}, "feature_map"),
                                        ({"impl": "step"}, "impl"), ({"nu": 2}, "nu"), ({"bogus": 1}, "bogus")],
                         ids=lambda v: str(v))
def test_bad_options_raise(opts, field):
    with pytest.raises(ValueError, match=field):
        build_layer("hqlt", d_model=D, num_heads=H, **opts)


def test_bad_state_and_input_raise():
    layer = contract.make("hqlt", window=4)
    _, state = layer(contract.inputs())
    with pytest.raises(ValueError, match="state"):
        layer(contract.inputs(), state[:3])
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(2, 3, D + 1, dtype=torch.float64))
