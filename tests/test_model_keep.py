"""FWPModel.forward(keep=mask): outputs at the kept positions only, equal to the full call's, with its
gradients (what the code-execution loss uses to skip the last block's work where no loss is read)."""

import pytest
import torch

from fastweights.models import build_model


@pytest.mark.parametrize("layer", ["deltanet", "transformer", "lstm", "rdn"])
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
