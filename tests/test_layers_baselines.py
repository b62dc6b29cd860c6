"""The baseline mixers (``transformer``, ``lstm``): whole == token by token == two halves, done resets,
padding invariance, and the transformer's window."""

import pytest
import torch

from fastweights.layers import build_layer, reset_state

from .helpers import shape_id

CASES = [
    ("transformer", {}),
    ("transformer", {"window": 4}),
    ("transformer", {"window": 1}),
    ("lstm", {}),
]
IDS = [f"{n}{'-w' + str(o['window']) if o else ''}" for n, o in CASES]
B, T, D, H = 3, 13, 16, 2


def make(name, options, seed=0):
    torch.manual_seed(seed)
    return build_layer(name, d_model=D, num_heads=H, **options).double()


def data(seed=1, b=B, t=T):
    return torch.randn(b, t, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def steps(layer, x, state=None):
    ys = []
    for t in range(x.shape[1]):
        y, state = layer(x[:, t:t + 1], state)
        ys.append(y)
    return torch.cat(ys, 1), state


@pytest.mark.parametrize("name,options", CASES, ids=[f"{i}-{shape_id(B=B, T=T, D=D, H=H)}" for i in IDS])
def test_whole_equals_steps_equals_halves(name, options):
    layer, x = make(name, options), data()
    whole, s_whole = layer(x)
    stepped, s_step = steps(layer, x)
    torch.testing.assert_close(stepped, whole, rtol=1e-5, atol=1e-10)
    for split in (1, 6, 12):
        y1, s1 = layer(x[:, :split])
        y2, s2 = layer(x[:, split:], s1)
        torch.testing.assert_close(torch.cat([y1, y2], 1), whole, rtol=1e-5, atol=1e-10)
        for a, b in zip(s2, s_whole):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("name,options", CASES, ids=[f"{i}-{shape_id(B=B, T=T, D=D, H=H)}" for i in IDS])
def test_done_reset_equals_fresh_start(name, options):
    layer = make(name, options)
    x1, x2 = data(1), data(2)
    _, state = layer(x1)
    done = torch.tensor([True, False, True])
    y, _ = layer(x2, reset_state(state, done))
    fresh, _ = layer(x2)
    carried, _ = layer(x2, state)
    torch.testing.assert_close(y[done], fresh[done], rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(y[~done], carried[~done], rtol=1e-5, atol=1e-10)
    if options.get("window") != 1:  # window 1 keeps no cache: nothing to reset
        assert not torch.allclose(carried[done], fresh[done])  # the reset did something


@pytest.mark.parametrize("name,options", CASES, ids=[f"{i}-{shape_id(B=B, T=T, D=D, H=H)}" for i in IDS])
def test_right_padding_never_changes_valid_outputs(name, options):
    layer, x = make(name, options), data()
    lengths = [T, 5, 9]
    padded = x.clone()
    for b, n in enumerate(lengths):
        padded[b, n:] = 1e3 * torch.randn(T - n, D, dtype=torch.float64)  # garbage after the end
    y, _ = layer(padded)
    for b, n in enumerate(lengths):
        alone, _ = layer(x[b:b + 1, :n])
        torch.testing.assert_close(y[b:b + 1, :n], alone, rtol=1e-5, atol=1e-10)


def test_transformer_window_caps_cache_and_limits_attention():
    layer = make("transformer", {"window": 4})
    x = data(t=20)
    _, (k, v, valid) = layer(x)
    assert k.shape == (B, 3, H, D // H) and v.shape == k.shape and valid.shape == (B, 3)
    _, state = steps(layer, x)
    assert state[0].shape[1] == 3  # constant while stepping
    # output at t depends on tokens t-3..t only
    y, _ = layer(x)
    x2 = x.clone()
    x2[:, :10] = torch.randn(B, 10, D, dtype=torch.float64)
    y2, _ = layer(x2)
    torch.testing.assert_close(y2[:, 13:], y[:, 13:])
    assert not torch.allclose(y2[:, 12], y[:, 12])
    # without a window the cache keeps everything
    _, (k_full, _, _) = make("transformer", {})(x)
    assert k_full.shape[1] == 20


def test_transformer_state_layout_and_bad_window():
    layer = make("transformer", {})
    _, (k, v, valid) = layer(data(t=5))
    assert k.shape == (B, 5, H, D // H) and valid.dtype == torch.bool and valid.all()
    with pytest.raises(ValueError, match="window"):
        build_layer("transformer", d_model=D, num_heads=H, window=0)
    with pytest.raises(ValueError, match="window"):
        build_layer("lstm", d_model=D, num_heads=H, window=3)


def test_lstm_state_is_batch_first_and_matches_nn_lstm():
    layer = make("lstm", {})
    x = data()
    y, (h, c) = layer(x)
    assert h.shape == (B, D) and c.shape == (B, D)
    ref, (h_ref, c_ref) = layer.lstm(x)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(h, h_ref[0])


@pytest.mark.parametrize("name", ["transformer", "lstm"])
def test_gradients_flow_into_carried_state(name):
    layer = make(name, {})
    x1 = data(1).requires_grad_()
    _, state = layer(x1)
    y2, _ = layer(data(2), state)
    (g,) = torch.autograd.grad(y2.sum(), x1)
    assert g.abs().sum() > 0
