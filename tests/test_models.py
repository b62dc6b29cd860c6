"""Models: config validation, heads, state carry/reset/detach for every layer, tied adaptive softmax,
generation."""

import os

import pytest
import torch

from fastweights.layers import layer_names
from fastweights.models import ConfigError, ModelConfig, build_model, count_parameters

V, D, L, H = 23, 16, 2, 2
B, T = 3, 11
TINY = dict(vocab_size=V, d_model=D, num_layers=L, num_heads=H)


def model_for(layer, seed=0, **fields):
    torch.manual_seed(seed)
    return build_model(**{**TINY, "layer": layer, **fields}).double().eval()


def ids_for(seed=1, b=B, t=T, v=V):
    return torch.randint(0, v, (b, t), generator=torch.Generator().manual_seed(seed))


# ---- config ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [
    ("layer", "nope"), ("vocab_size", 0), ("d_model", -1), ("num_layers", 2.5), ("num_heads", 3),
    ("head_dim", 0), ("d_ff", 0), ("dropout", 1.0), ("head", "regression"), ("num_classes", 5),
    ("tie_embeddings", "yes"), ("adaptive_softmax", [10, 5]), ("adaptive_softmax", [5, V]),
    ("pos_encoding", "rotary"), ("layer_options", {"windoww": 3}),
])
def test_config_bad_value_names_field_and_value(field, value):
    with pytest.raises(ValueError) as e:
        ModelConfig(**{**TINY, "layer": "transformer", field: value})
    assert isinstance(e.value, ConfigError) and e.value.field == field
    assert field in str(e.value) and repr(value).strip("[]") in str(e.value)


def test_config_defaults():
    cfg = ModelConfig(**TINY, layer="transformer")
    assert cfg.d_ff == 4 * D and cfg.pos_encoding == "sinusoidal"
    assert ModelConfig(**TINY, layer="deltanet").pos_encoding == "none"
    with pytest.raises(ConfigError, match="num_classes"):
        ModelConfig(**TINY, head="token")
    with pytest.raises(ConfigError, match="adaptive_softmax"):
        ModelConfig(**TINY, head="sequence", num_classes=3, adaptive_softmax=[5])


# ---- heads ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head,asm", [("token", None), ("sequence", None), ("lm", None), ("lm", [5, 12])],
                         ids=["token", "sequence", "lm", "lm-adaptive"])
def test_head_output_shapes(head, asm):
    m = model_for("deltanet", head=head, num_classes=None if head == "lm" else 7, adaptive_softmax=asm)
    out, state = m(ids_for())
    expected = {"token": (B, T, 7), "sequence": (B, 7), "lm": (B, T, V)}[head]
    assert out.shape == expected
    assert state["pos"].tolist() == [T] * B and len(state["layers"]) == L
    if asm is not None:  # log-probabilities over the whole vocabulary
        torch.testing.assert_close(out.exp().sum(-1), torch.ones(B, T, dtype=torch.float64))


@pytest.mark.parametrize("layer", ["deltanet", "transformer"])
def test_sequence_head_picks_last_valid_token(layer):
    m = model_for(layer, head="sequence", num_classes=5)
    ids = ids_for()
    lengths = torch.tensor([T, 4, 7])
    padded = ids.clone()
    padded[1, 4:] = 0
    padded[2, 7:] = V - 1
    out, _ = m(padded, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        alone, _ = m(ids[b:b + 1, :n])
        torch.testing.assert_close(out[b:b + 1], alone)
    with pytest.raises(ValueError, match="lengths"):
        m(ids, lengths=torch.tensor([0, 1, 2]))


def test_adaptive_softmax_tied_embeddings_share_storage():
    torch.manual_seed(0)
    m = build_model(**TINY, layer="lt", adaptive_softmax=[5, 12], tie_embeddings=True)
    asm = m.asm
    words = [(0, 5, asm.head.weight), (5, 12, asm.tail[0][1].weight), (12, V, asm.tail[1][1].weight)]
    ids = torch.arange(V)[None]
    emb = m.embed(ids)[0] / m.embed.scale
    for lo, hi, w in words:
        assert w.shape[1] == D
        torch.testing.assert_close(emb[lo:hi], w[:hi - lo])
    assert "weight" not in dict(m.embed.named_parameters())  # no table of its own
    before = [w.detach().clone() for _, _, w in words]
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    loss, _ = m.lm_loss(ids_for(), ids_for(2))
    loss.backward()
    opt.step()
    for (lo, hi, w), old in zip(words, before):
        assert not torch.equal(w[:hi - lo], old[:hi - lo])  # the output weights moved...
        torch.testing.assert_close(m.embed(torch.arange(lo, hi)[None])[0] / m.embed.scale, w[:hi - lo].detach())
    untied = build_model(**TINY, layer="lt", adaptive_softmax=[5, 12], tie_embeddings=False)
    assert count_parameters(untied) == count_parameters(m) + V * D


def test_plain_lm_tied_and_loss_matches_cross_entropy():
    m = model_for("deltanet")
    assert m.lm_head.weight is m.embed.weight
    ids, tgt = ids_for(), ids_for(2)
    tgt[0, :3] = -100
    logits, _ = m(ids)
    loss, _ = m.lm_loss(ids, tgt)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1)))
    ma = model_for("deltanet", adaptive_softmax=[5, 12])
    lp, _ = ma.log_prob(ids)
    nll, _ = ma.lm_loss(ids, tgt, reduction="none")
    keep = tgt != -100
    torch.testing.assert_close(nll[keep], -lp[keep].gather(-1, tgt[keep][:, None])[:, 0])
    assert (nll[~keep] == 0).all()


# ---- state: every registered layer -------------------------------------------------------------------
@pytest.mark.parametrize("layer", layer_names())
def test_state_carry_equals_whole_sequence(layer):
    m = model_for(layer)
    ids = ids_for()
    whole, s_whole = m(ids)
    state, outs = None, []
    for t in range(T):
        o, state = m(ids[:, t:t + 1], state)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), whole, rtol=1e-5, atol=1e-9)
    o1, s1 = m(ids[:, :5])
    o2, s2 = m(ids[:, 5:], s1)
    torch.testing.assert_close(torch.cat([o1, o2], 1), whole, rtol=1e-5, atol=1e-9)
    assert torch.equal(s2["pos"], s_whole["pos"])


@pytest.mark.parametrize("layer", layer_names())
def test_done_resets_rows_to_a_fresh_start(layer):
    m = model_for(layer)
    _, state = m(ids_for(1))
    x2 = ids_for(2, t=6)
    done = torch.tensor([False, True, True])
    out, new = m(x2, state, done=done)
    fresh, _ = m(x2)
    carried, _ = m(x2, state)
    torch.testing.assert_close(out[done], fresh[done], rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(out[~done], carried[~done], rtol=1e-5, atol=1e-9)
    assert new["pos"].tolist() == [T + 6, 6, 6]


@pytest.mark.parametrize("layer", ["deltanet", "delta-rnn", "transformer", "lstm"])
def test_gradient_through_state_within_segment_none_across_detach(layer):
    m = model_for(layer)
    x1 = torch.randn(2, 5, D, dtype=torch.float64, requires_grad=True)  # float inputs skip the embedding
    x2 = torch.randn(2, 4, D, dtype=torch.float64)
    _, state = m(x1)
    out, _ = m(x2, state)
    (g,) = torch.autograd.grad(out.sum(), x1, allow_unused=True)
    assert g is not None and g.abs().sum() > 0
    _, state = m(x1)
    out, _ = m(x2, m.detach_state(state))
    (g,) = torch.autograd.grad(out.sum(), x1, allow_unused=True)
    assert g is None
    # the parameters still get gradients in the second segment
    assert torch.autograd.grad(out.sum(), m.blocks[0].mixer.parameters().__next__())[0] is not None


# ---- the block stack, shared with the RL cores ------------------------------------------------------
def _stack(**fields):
    from fastweights.models import BlockStack

    torch.manual_seed(0)
    return BlockStack(**{"layer": "rdn", "d_model": 8, "num_layers": 2, "num_heads": 2, **fields}).double()


def test_block_stack_is_the_trunk_of_the_models_and_of_the_rl_cores():
    from fastweights.models import BlockStack
    from fastweights.models.agent import Agent

    m = model_for("deltanet", head_dim=4, d_ff=24, layer_options={"feature_map": "dpfp"})
    assert isinstance(m.blocks, BlockStack) and len(m.blocks) == L and m.blocks[0].ff[0].out_features == 24
    assert m.blocks[0].mixer.head_dim == 4
    ids = ids_for()
    y, layer_states = m.blocks(m.embed(ids))
    h, state = m.hidden(ids)
    assert torch.equal(h, m.norm(y)) and len(state["layers"]) == len(layer_states) == L
    core = Agent((4,), 2, encoder="mlp", core="deltanet", features=8, core_dim=16, core_ff=32,
                 layer_options={"feature_map": "dpfp"}).core
    assert isinstance(core.blocks, BlockStack) and core.blocks[1].ff[0].out_features == 32
    assert core.blocks[0].mixer.feature_dim == 2 * 16 // 4  # DPFP (nu 1) doubles the head size
    assert not [k for k in core.state_dict() if not k.startswith(("proj.", "blocks.", "norm."))]
    with pytest.raises(ValueError, match="layer_options"):
        Agent((4,), 2, encoder="mlp", core="ff", features=8, layer_options={"feature_map": "dpfp"})


def test_block_stack_steps_carry_and_done_resets():
    stack = _stack()
    x1, x2 = torch.randn(3, 5, 8, dtype=torch.float64), torch.randn(3, 4, 8, dtype=torch.float64)
    whole, s1 = stack(x1)
    state, steps = None, []
    for t in range(5):  # one step at a time, carrying the state
        y, state = stack(x1[:, t:t + 1], state)
        steps.append(y)
    torch.testing.assert_close(torch.cat(steps, 1), whole, rtol=1e-6, atol=1e-9)
    done = torch.tensor([True, False, True])
    out, _ = stack(x2, s1, done)
    fresh, carried = stack(x2)[0], stack(x2, s1)[0]
    assert torch.equal(out[done], fresh[done]) and torch.equal(out[~done], carried[~done])
    with pytest.raises(ValueError, match="one entry per block"):
        stack(x2, s1[:1])


@pytest.mark.parametrize("field,value,shown", [
    ("layer", "nope", "layer name must be one of"), ("d_model", 2.5, "d_model must be a positive int, got 2.5"),
    ("num_layers", 0, "num_layers must be a positive int, got 0"), ("num_heads", 3, "num_heads (3)"),
    ("d_ff", 0, "d_ff must be a positive int, got 0"), ("dropout", 1.0, "dropout must be a number in [0, 1), got 1.0"),
    ("layer_options", ["window"], "layer_options must be a dict or None, got ['window']"),
    ("layer_options", {"windoww": 3}, "no option 'windoww' (given windoww=3)"),
])
def test_block_stack_bad_value_names_it(field, value, shown):
    with pytest.raises(ValueError) as e:
        _stack(**{field: value})
    assert shown in str(e.value) and len(str(e.value).splitlines()) == 1


# ---- generation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("layer,asm", [("deltanet", None), ("transformer", None), ("rdn", [5, 12])],
                         ids=["deltanet", "transformer", "rdn-adaptive"])
def test_generate_shape_determinism_and_greedy(layer, asm):
    m = model_for(layer, adaptive_softmax=asm)
    prompt = ids_for(t=4)[:2]
    a = m.generate(prompt, 6, generator=torch.Generator().manual_seed(3))
    b = m.generate(prompt, 6, generator=torch.Generator().manual_seed(3))
    assert a.shape == (2, 10) and torch.equal(a, b) and torch.equal(a[:, :4], prompt)
    torch.manual_seed(5)
    c = m.generate(prompt, 6, temperature=0.7)
    torch.manual_seed(5)
    assert torch.equal(c, m.generate(prompt, 6, temperature=0.7))
    greedy = m.generate(prompt, 6, top_k=1)
    seq = prompt  # reference: recompute the whole sequence each step and take the argmax
    for _ in range(6):
        out, _ = m(seq)
        seq = torch.cat([seq, out[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(greedy, seq)
    with pytest.raises(ValueError, match="top_k"):
        m.generate(prompt, 2, top_k=0)


def test_generate_state_is_constant_size_for_fwp():
    m = model_for("deltanet")
    _, s_short = m(ids_for(t=3))
    _, s_long = m(ids_for(t=40))
    shapes = lambda s: [t.shape for layer in s["layers"] for t in layer]  # noqa: E731
    assert shapes(s_short) == shapes(s_long)



# ---- floor: constant memory when stepping an FWP ------------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc to read the RSS")
def test_floor_deltanet_stepping_keeps_rss_flat():
    from fastweights.bench.step import step_benchmark

    r = step_benchmark("deltanet", tokens=1200)  # 2 layers, d_model 128, 4 heads, one token at a time
    assert r["rss_growth_mb"] < 5.0, r


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.7, None), (1.0, 3)],
                         ids=["two-stage-adaptive", "temperature", "top-k"])
def test_sampled_words_follow_the_full_distribution(temperature, top_k):
    """The generation sampler (two-stage for the adaptive softmax at temperature 1, inverse-CDF otherwise)
    draws words with the probabilities of the full next-word distribution: empirical frequencies of 40,000
    draws from one state match them within 4 standard errors."""
    m = model_for("deltanet", adaptive_softmax=[5, 12]).eval()
    h = torch.randn(1, m.cfg.d_model, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        scores = m._word_scores(h).float()[0] / temperature
        if top_k is not None:
            scores = scores.masked_fill(scores < torch.topk(scores, top_k).values[-1], float("-inf"))
        p = torch.softmax(scores, -1)
        n = 40_000
        g = torch.Generator().manual_seed(1)
        draws = torch.cat([m._next_word(h.expand(1000, -1), temperature, top_k, g)[:, 0] for _ in range(n // 1000)])
    freq = torch.bincount(draws, minlength=p.numel()).double() / n
    se = (p.double() * (1 - p.double()) / n).sqrt()
    assert torch.all((freq - p.double()).abs() <= 4 * se + 1e-12), (freq, p)
    assert torch.all(freq[p == 0] == 0)


@pytest.mark.parametrize("layer", ["lstm", "deltanet", "transformer", "rdn"])
def test_empty_batches_and_bad_ids_are_handled(layer):
    """B = 0 or T = 0 runs (empty outputs); bool ids and an empty generation prompt are one-line errors."""
    m = model_for(layer)
    for shape in ((0, 5), (2, 0)):
        out, _ = m(torch.zeros(*shape, dtype=torch.long))
        assert out.shape == (*shape, V)
    with pytest.raises(ValueError, match="integer token ids"):
        m(torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="T0 >= 1"):
        m.generate(torch.zeros(1, 0, dtype=torch.long), 2)
