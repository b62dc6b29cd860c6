"""The single-token path of generation.

* Ops: ``impl="auto"`` on a call of a few steps runs the step path (``ops._step``; chosen in one place,
  ``ops._utils.resolve_impl``; on the CPU the RDN and the SRWM keep their fused kernels, faster there) and it is
  the reference's recurrence: outputs, final states and gradients against the
  reference at T = 1 and 2; a sequence fed one token at a time (as generation does) equals the whole sequence on
  the chunkwise / fused path. (``tests/test_ops_registry.py`` also checks ``impl="step"`` at every length.)
* The model: its few-ids embedding equals the masked one, and ``generate`` (one step per token through the step
  paths, without the ids' checks) gives the tokens that the old token-by-token loop gives (``model.hidden`` per
  token, every op on its chunkwise / fused path), greedy and sampled, for every fast-weight layer.
"""

from __future__ import annotations

import pytest
import torch

from fastweights.models import build_model
from fastweights.models.model import FEW_IDS
from fastweights.ops._step import STEP_MAX_T, STEP_MAX_T_GRAD
from fastweights.ops._utils import use_step_path
from fastweights.ops.registry import OPS

from .helpers import assert_impls_match, case_runner, flat_state, shape_id

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-9)}
# the path auto takes for a few steps on the CPU: the step path, except where the fused kernel's one-step call is
# faster (measured; see the ops)
FEW_STEPS_PATH = {"recurrent_delta_rule": "fused", "srwm": "fused"}


def op_params(shapes):
    return [pytest.param(spec, (B, T, H, D), dt, id="-".join([spec.name, shape_id(B=B, T=T, H=H, D=D),
                                                               str(dt).removeprefix("torch.")]))
            for spec in OPS.values() for (B, T, H, D) in shapes for dt in (torch.float32, torch.float64)]


def test_step_path_choice():
    assert use_step_path(1) and use_step_path(STEP_MAX_T_GRAD)
    with torch.no_grad():
        assert use_step_path(STEP_MAX_T) and not use_step_path(STEP_MAX_T + 1)
    assert not use_step_path(STEP_MAX_T_GRAD + 1) and not use_step_path(None)


@pytest.mark.parametrize("spec,shape,dtype", op_params([(2, 1, 3, 16), (1, 1, 4, 32), (2, 2, 2, 8)]))
def test_auto_on_few_steps_is_the_step_path_and_matches_the_reference(spec, shape, dtype):
    """Under no_grad: auto is the step path (the fused one for the RDN and the SRWM), bitwise. With gradients:
    outputs, final states and every gradient (inputs, weights and initial state) of auto against the reference."""
    case = spec.make_inputs(*shape, dtype=dtype, seed=3, with_state=True)
    run = case_runner(spec, case)
    with torch.no_grad():
        o_auto, s_auto = run("auto", **case.tensors())
        o_step, s_step = run(FEW_STEPS_PATH.get(spec.name, "step"), **case.tensors())
    assert torch.equal(o_auto, o_step)
    for a, b in zip(flat_state(s_auto), flat_state(s_step)):
        assert torch.equal(a, b)
    assert_impls_match(run, case.tensors(), fast="auto", **TOL[dtype])


@pytest.mark.parametrize("spec,shape,dtype", op_params([(2, 19, 2, 16)]))
def test_one_token_at_a_time_equals_the_whole_sequence(spec, shape, dtype):
    """Generation's pattern: T calls of one step each (auto: the step path), carrying the state, from the case's
    initial state, equal one call on the whole sequence (auto: the chunkwise / fused path) and the reference."""
    case = spec.make_inputs(*shape, dtype=dtype, seed=4, with_state=True, requires_grad=False)
    seq, fixed = case.seq_names, {n: case.inputs[n] for n in case.weights}
    state = tuple(case.initial_state[n] for n in case.state_names)
    with torch.no_grad():
        whole, whole_state = spec.call("auto", case.inputs, state, True, **case.options)
        ref, ref_state = spec.call("reference", case.inputs, state, True, **case.options)
        outs = []
        for t in range(shape[1]):
            step_inputs = {n: (case.inputs[n][:, t:t + 1] if n in seq else fixed[n]) for n in case.inputs}
            o, state = spec.call("auto", step_inputs, state, True, **case.options)
            outs.append(o)
    steps = torch.cat(outs, dim=1)
    torch.testing.assert_close(steps, whole, **TOL[dtype])
    torch.testing.assert_close(steps, ref, **TOL[dtype])
    for a, b, c in zip(flat_state(state), flat_state(whole_state), flat_state(ref_state)):
        torch.testing.assert_close(a, b, **TOL[dtype])
        torch.testing.assert_close(a, c, **TOL[dtype])


# ------------------------------------------------------------------------------------------ the model

CUTOFFS = [20, 50, 120]
VOCAB = 200


def _lm(layer: str, impl: str | None, seed: int = 0, **cfg):
    torch.manual_seed(seed)
    options = {} if impl is None else {"impl": impl}
    fields = dict(layer=layer, vocab_size=VOCAB, d_model=32, num_layers=2, num_heads=2, adaptive_softmax=CUTOFFS,
                  layer_options=options)
    return build_model(**{**fields, **cfg}).eval()


def test_few_ids_embedding_equals_the_masked_one():
    model = _lm("deltanet", None)
    emb = model.embed
    ids = torch.tensor([[0, 19, 20, 49], [50, 119, 120, 199]])  # both ends of every cluster
    assert ids.numel() <= FEW_IDS
    many = torch.cat([ids, ids], dim=1)  # above FEW_IDS: the masked path
    assert many.numel() > FEW_IDS
    assert torch.equal(emb(ids), emb(many)[:, :ids.shape[1]])
    with pytest.raises(ValueError, match="vocab_size"):
        emb(torch.tensor([[VOCAB]]))


def _old_generate(model, prompt, n, top_k, generator):
    """The generation loop as it was: ``model.hidden`` on every new token (its checks, its masked embedding)."""
    out = [prompt]
    with torch.no_grad():
        h, state = model.hidden(prompt)
        for i in range(n):
            nxt = model._next_word(h[:, -1], 1.0, top_k, generator)
            out.append(nxt)
            if i + 1 < n:
                h, state = model.hidden(nxt, state)
    return torch.cat(out, dim=1)


# (layer, its old path: the impl every one-token call took before the step paths)
OLD_PATHS = [("deltanet", "chunk"), ("lt", "chunk"), ("delta-mlp", "chunk"), ("delta-delta", "chunk"),
             ("delta-rnn", "fused"), ("delta-lstm", "fused"), ("rdn", "fused"), ("srwm", "fused"),
             ("gated-deltanet", "chunk"), ("hqlt", "chunk"), ("transformer", None), ("lstm", None)]


@pytest.mark.parametrize("layer,old_impl", OLD_PATHS, ids=[p[0] for p in OLD_PATHS])
@pytest.mark.parametrize("top_k", [1, None], ids=["greedy", "sampled"])
def test_generate_equals_the_old_token_by_token_loop(layer, old_impl, top_k):
    """The same weights, prompt and seed: ``generate`` (auto: the step paths) gives the tokens of the old loop with
    every op on its old path; the logits along the way agree to float32 rounding."""
    new = _lm(layer, None)
    old = _lm(layer, old_impl)
    old.load_state_dict(new.state_dict())
    prompt = torch.tensor([[3, 25, 60, 130, 7], [150, 1, 2, 90, 44]])
    n = 24
    got = new.generate(prompt, n, top_k=top_k, generator=torch.Generator().manual_seed(5))
    want = _old_generate(old, prompt, n, top_k, torch.Generator().manual_seed(5))
    assert torch.equal(got, want)
    with torch.no_grad():  # the scores of the generated text, token by token (new) and all at once (old)
        h_new, state = new.hidden(got[:, :1])
        hs = [h_new]
        for t in range(1, got.shape[1]):
            h_new, state = new._trunk(new.embed(got[:, t:t + 1]), state)
            hs.append(h_new)
        h_old, _ = old.hidden(got)
    torch.testing.assert_close(torch.cat(hs, dim=1), h_old, atol=1e-4, rtol=1e-4)


def test_generate_after_a_long_context_equals_the_old_loop():
    """A context of 300 words (several chunks, the state well filled), then 16 greedy words."""
    new = _lm("deltanet", None)
    old = _lm("deltanet", "chunk")
    old.load_state_dict(new.state_dict())
    prompt = torch.randint(0, VOCAB, (1, 300), generator=torch.Generator().manual_seed(0))
    got = new.generate(prompt, 16, top_k=1)
    assert torch.equal(got, _old_generate(old, prompt, 16, 1, None))
