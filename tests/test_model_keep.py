"""FWPModel.forward(keep=mask): outputs at the kept positions only, equal to the full call's, with its
gradients (what the code-execution loss uses to skip the last block's work where no loss is read)."""

import pytest
import torch

from fastweights.layers import layer_names
from fastweights.models import build_model


@pytest.mark.parametrize("layer", layer_names())
@pytest.mark.parametrize("B,T", [(3, 7), (2, 1)], ids=["B3-T7", "B2-T1"])
def test_keep_equals_the_full_outputs_at_those_positions(layer, B, T):
    torch.manual_seed(0)
    model = build_model(layer=layer, vocab_size=11, d_model=16, num_layers=2, num_heads=2, head="token",
                        num_classes=5, dropout=0.0)
    ids = torch.randint(0, 11, (B, T))
    keep = torch.rand(B, T) < 0.5
    keep[0, -1] = True
    full, _ = model(ids)
    part, _ = model(ids, keep=keep)
    torch.testing.assert_close(part, full[keep], rtol=1e-5, atol=1e-6)
    g_full = torch.autograd.grad(full[keep].square().sum(), list(model.parameters()), allow_unused=True)
    g_part = torch.autograd.grad(part.square().sum(), list(model.parameters()), allow_unused=True)
    for a, b in zip(g_full, g_part):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_keep_errors_name_the_argument():
    model = build_model(layer="deltanet", vocab_size=11, d_model=16, num_layers=1, num_heads=2, head="token",
                        num_classes=5)
    ids = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="keep must be a \\[B, T\\]"):
        model(ids, keep=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="keep must be"):
        model(ids, keep=torch.ones(2, 4))
    seq = build_model(layer="deltanet", vocab_size=11, d_model=16, num_layers=1, num_heads=2, head="sequence",
                      num_classes=5)
    with pytest.raises(ValueError, match="keep is for the token and LM heads"):
        seq(ids, keep=torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.parametrize("window,fresh", [(None, True), (3, True), (None, False)],
                         ids=["full-fresh", "window3-fresh", "full-cached"])
@pytest.mark.parametrize("B,T", [(3, 9), (1, 1)], ids=["B3-T9", "B1-T1"])
def test_attention_with_keep_equals_the_full_output_at_the_kept_positions(window, fresh, B, T):
    """The transformer computes its queries, attention and W_o at the kept positions only (fresh start, no
    window), else indexes its full output: both equal ``y[keep]``, with the full call's state and gradients.
    Rows with no kept position included."""
    from fastweights.layers import build_layer

    torch.manual_seed(1)
    layer = build_layer("transformer", d_model=8, num_heads=2, window=window)
    x = torch.randn(B, T, 8, requires_grad=True)
    with torch.no_grad():
        state = None if fresh else layer(torch.randn(B, 4, 8))[1]
    keep = torch.rand(B, T) < 0.5
    keep[0, -1] = True
    if B > 1:
        keep[1] = False
    full, s_full = layer(x, state)
    part, s_part = layer(x, state, keep=keep)
    torch.testing.assert_close(part, full[keep], rtol=1e-5, atol=1e-6)
    for a, b in zip(s_full, s_part):
        torch.testing.assert_close(b, a)
    params = [x, *layer.parameters()]
    g_full = torch.autograd.grad(full[keep].sin().sum(), params)
    g_part = torch.autograd.grad(part.sin().sum(), params)
    for a, b in zip(g_full, g_part):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_attention_with_keep_under_bf16_autocast_matches_the_full_call():
    from fastweights.layers import build_layer

    torch.manual_seed(2)
    layer = build_layer("transformer", d_model=16, num_heads=2)
    x = torch.randn(2, 12, 16)
    keep = torch.rand(2, 12) < 0.3
    keep[:, -1] = True
    with torch.autocast("cpu", torch.bfloat16):
        full, _ = layer(x)
        part, _ = layer(x, keep=keep)
    assert part.dtype == full.dtype
    torch.testing.assert_close(part.float(), full[keep].float(), rtol=2e-2, atol=2e-2)
