"""The training-speed paths of the layers: the cheaper dropout mask and causal attention from a fresh start."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastweights.layers.baselines import cached_attention, empty_kv_cache
from fastweights.layers.dropout import Dropout, dropout
from fastweights.models.blocks import BlockStack


def test_dropout_keeps_one_minus_p_and_scales():
    torch.manual_seed(0)
    x = torch.randn(200, 500)
    for p in (0.1, 0.5):
        y = dropout(x, p)
        kept = y != 0
        assert abs(kept.float().mean().item() - (1 - p)) < 0.005  # 100k draws: std 0.0016 at p = 0.5
        torch.testing.assert_close(y[kept], x[kept] / (1 - p))


def test_dropout_gradient_is_mask_times_scale():
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)
    g = torch.randn(64, 33)
    y = dropout(x, 0.25)
    y.backward(g)
    kept = (y != 0).float()
    torch.testing.assert_close(x.grad, g * kept / 0.75)


def test_dropout_identity_and_edges_and_seed():
    x = torch.randn(8, 9)
    m = Dropout(0.3)
    assert isinstance(m, nn.Dropout) and m.p == 0.3
    m.eval()
    assert m(x) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    m.train()
    torch.manual_seed(5)
    a = m(x)
    torch.manual_seed(5)
    assert torch.equal(m(x), a)  # the default generator decides: a saved RNG state resumes exactly


def test_dropout_under_autocast_keeps_dtype():
    x = torch.randn(4, 16, dtype=torch.bfloat16, requires_grad=True)
    y = dropout(x, 0.1)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16


def test_block_stack_uses_the_cheaper_dropout():
    stack = BlockStack("deltanet", 16, 2, 2, dropout=0.1)
    assert all(isinstance(b.drop, Dropout) for b in stack)


def test_fresh_causal_attention_equals_the_masked_path():
    torch.manual_seed(0)
    B, T, H, D = 3, 11, 2, 4
    q, k, v = (torch.randn(B, T, H, D, requires_grad=True) for _ in range(3))
    o, (kc, vc, valid) = cached_attention(q, k, v, empty_kv_cache(k, 0, H, D))
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask).transpose(1, 2)
    torch.testing.assert_close(o, ref)
    g = torch.randn_like(o)
    grads = torch.autograd.grad(o, (q, k, v), g)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)
    assert torch.equal(kc, k) and torch.equal(vc, v) and valid.all() and valid.shape == (B, T)
    # carrying that cache on gives what the whole sequence gives
    o2, _ = cached_attention(q[:, :5], k[:, :5], v[:, :5], empty_kv_cache(k, 0, H, D))
    o3, _ = cached_attention(q[:, 5:], k[:, 5:], v[:, 5:], _)
    torch.testing.assert_close(torch.cat([o2, o3], 1), o)


def test_block_stack_keep_equals_the_full_output_at_those_positions():
    import pytest

    for layer in ("deltanet", "transformer", "lstm"):
        torch.manual_seed(0)
        stack = BlockStack(layer, 16, 2, 2)  # no dropout: the two calls draw nothing
        x = torch.randn(3, 9, 16, requires_grad=True)
        keep = torch.rand(3, 9) < 0.3
        keep[0, -1] = True
        y_full, s_full = stack(x)
        y_keep, s_keep = stack(x, keep=keep)
        torch.testing.assert_close(y_keep, y_full[keep])
        for a, b in zip(torch.utils._pytree.tree_leaves(s_full), torch.utils._pytree.tree_leaves(s_keep)):
            torch.testing.assert_close(a, b)
        g = torch.randn_like(y_keep)
        gx_keep, = torch.autograd.grad(y_keep, x, g)
        full_g = torch.zeros_like(y_full)
        full_g[keep] = g
        gx_full, = torch.autograd.grad(y_full, x, full_g)
        torch.testing.assert_close(gx_keep, gx_full)
        with pytest.raises(ValueError, match="keep must be"):
            stack(x, keep=keep.float())


def test_objective_on_the_kept_logits_equals_the_full_one():
    from fastweights.train.data import BLANK_ID, loss_mask, objective

    torch.manual_seed(0)
    B, T, C = 4, 12, 7
    targets = torch.randint(0, C, (B, T))
    targets[:, -2:] = 0  # padding
    targets[1] = BLANK_ID  # a program without prints
    targets[1, -1] = 0
    batch = {"inputs": torch.zeros(B, T, dtype=torch.long), "targets": targets,
             "lengths": torch.full((B,), T - 2)}
    for where in ("prints", "all"):
        logits = torch.randn(B, T, C, requires_grad=True)
        logits.data[0] = torch.nn.functional.one_hot(targets[0], C).float() * 9  # row 0 all right
        full = objective("code-exec", logits, batch, where)
        kept = objective("code-exec", logits[loss_mask(batch, where)], batch, where)
        assert {k: v for k, v in full.items() if k != "loss_sum"} == {k: v for k, v in kept.items() if k != "loss_sum"}
        assert full["seq_correct"] >= 2  # rows 0 and 1
        torch.testing.assert_close(kept["loss_sum"], full["loss_sum"])
        g_full, = torch.autograd.grad(full["loss_sum"], logits)
        g_kept, = torch.autograd.grad(kept["loss_sum"], logits)
        torch.testing.assert_close(g_kept, g_full)
