"""Every op (registry-driven: every op x impl), every layer (layer-registry-driven) and a model training step under
``torch.autocast("cpu", ...)`` against float32.

Tolerances, and why:

* **Ops**, at the float32 tolerance of the registry. Under autocast an op is a float32 op
  (``ops._utils.autocast_float32``): it runs with autocast off on float32 copies of its low-precision inputs. So
  we give it bfloat16 (or float16) sequence inputs next to float32 weights and states, as a layer under autocast
  does, and compare with the float32 reference run on the *same* values (the low-precision inputs cast up
  exactly): outputs and final states must agree as closely as any float32 fast path agrees with the reference,
  which proves that nothing inside the op (state, triangular solve, recurrence) was rounded to low precision.
  Each low-precision input's gradient is the float32 gradient rounded once to its dtype by the cast's backward:
  a relative error of at most 2^-8 for bfloat16 (8 significant bits, round to nearest: half a unit in the last
  place is 2^-8 of the value at worst) and 2^-11 for float16, added to the float32 tolerance's rtol.
* **Layers and the model**, normwise: ``||x_autocast - x_fp32|| <= 2^-5 ||x_fp32||`` for the output, the carried
  state and every gradient (of the input and of each parameter). There the projections really run in bfloat16:
  every rounding to bfloat16 costs a relative error of at most 2^-8 of the rounded value, and in a sum of many
  terms of random sign such errors stay at that size relative to the sum's norm. A layer's forward rounds at
  most about six times in series (the input, the weight and the result of the input projection; the op's output,
  W_o and the result of the output projection); its backward as many again: 12 x 2^-8 ~ 2^-4.4 is the worst
  case if every rounding err the same way, and with random signs sqrt(12) x 2^-8 ~ 2^-6.2 is typical (measured
  here: 2^-8.5 to 2^-6.8). 2^-5 lies between, and holds because the fast-weight state is float32: rounded to
  bfloat16 at each of T steps, its error would grow with T instead (an estimate: T x 2^-9 ~ 5% at T = 24).
* **The model's gradients**: two blocks put four such layers (mixer, feedforward) in series in the backward, about
  4 x 12 roundings: sqrt(48) x 2^-8 ~ 2^-5.2 typical, so 2^-4 for the whole gradient (measured: up to 2^-5.7).
  One parameter's gradient can lose more where its sum over B x T cancels (the norms' gains and biases,
  measured: up to 2^-3.7), so 2^-3 per parameter.
"""

from __future__ import annotations

import pytest
import torch

from fastweights.layers import build_layer, layer_names
from fastweights.models import build_model
from fastweights.ops.registry import OPS

from .helpers import case_runner, flat_state, run_with_grads, shape_id

LOW = {"bf16": torch.bfloat16, "f16": torch.float16}
GRAD_RTOL = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}  # one rounding of a float32 gradient
NORM_TOL = 2.0**-5  # layers (and the model's loss), normwise (see the module docstring)
MODEL_ALL_GRADS_TOL, MODEL_GRAD_TOL = 2.0**-4, 2.0**-3  # the model's whole gradient; each parameter's

OP_SHAPE = (2, 37, 2, 16)  # B, T, H, D: several chunks, the last one part-filled
# (low dtype, whether loss.backward() runs inside the autocast region too)
OP_MODES = [("bf16", False), ("bf16", True), ("f16", False)]


def op_params():
    out = []
    for spec in OPS.values():
        for impl in spec.impls:
            for low, bwd_inside in OP_MODES:
                B, T, H, D = OP_SHAPE
                sid = "-".join([spec.name, impl, shape_id(B=B, T=T, H=H, D=D), low]
                               + (["backward-in-autocast"] if bwd_inside else []))
                out.append(pytest.param(spec, impl, LOW[low], bwd_inside, id=sid))
    return out


def normwise_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize("spec,impl,low,bwd_inside", op_params())
def test_op_under_autocast_is_the_float32_op(spec, impl, low, bwd_inside):
    """Outputs, final states and every gradient (inputs, weights, initial state) of the op under autocast, with
    low-precision sequence inputs and float32 weights and state, against the float32 reference on the same values;
    the results are float32 and each gradient comes back in its input's dtype."""
    case = spec.make_inputs(*OP_SHAPE, dtype=torch.float32, seed=0, with_state=True, requires_grad=False)
    tensors = case.tensors()
    seq = set(case.seq_names)
    mixed = {n: (x.to(low) if n in seq else x.clone()).requires_grad_(True) for n, x in tensors.items()}
    exact = {n: x.detach().float().requires_grad_(True) for n, x in mixed.items()}  # the same values, float32
    run = case_runner(spec, case)

    def autocast_run(impl_, **inputs):
        with torch.autocast("cpu", dtype=low):
            return run(impl_, **inputs)

    o_ref, s_ref, g_ref = run_with_grads(run, "reference", exact)
    if bwd_inside:
        with torch.autocast("cpu", dtype=low):
            o, s, g = run_with_grads(run, impl, mixed)
    else:
        o, s, g = run_with_grads(autocast_run, impl, mixed)

    tol = spec.tolerances[torch.float32]
    assert o.dtype == torch.float32 and all(x.dtype == torch.float32 for x in s)
    if bwd_inside:
        # PyTorch advises backward() outside autocast: inside it, autograd's own backward formulas are re-cast to
        # low precision too (the hand-written ones are guarded by ops._utils.autocast_off). It must still run,
        # with gradients in their inputs' dtypes, within the layers' bfloat16 tolerance.
        torch.testing.assert_close(o, o_ref, **tol, msg=lambda m: f"output: {m}")
        for n in g:
            assert g[n] is not None and g[n].dtype == mixed[n].dtype, f"grad {n}"
            assert normwise_error(g[n], g_ref[n]) <= NORM_TOL, f"grad {n}: {normwise_error(g[n], g_ref[n]):.2e}"
        return
    torch.testing.assert_close(o, o_ref, **tol, msg=lambda m: f"output: {m}")
    assert len(s) == len(s_ref) == len(case.state_names)
    for name, a, b in zip(case.state_names, s, s_ref):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"state {name}: {m}")
    assert g.keys() == g_ref.keys() == mixed.keys()
    for n in g:
        assert g[n] is not None and g[n].dtype == mixed[n].dtype, f"grad {n}: {None if g[n] is None else g[n].dtype}"
        rtol = tol["rtol"] + (GRAD_RTOL[low] if n in seq else 0.0)
        torch.testing.assert_close(g[n].float(), g_ref[n], atol=tol["atol"], rtol=rtol,
                                   msg=lambda m, n=n: f"grad {n}: {m}")


# ------------------------------------------------------------------------------------------------ layers

D_MODEL, HEADS, B, T, SPLIT = 32, 2, 2, 24, 10
# Key/value caches keep the projections' dtype (they store, they do not sum): the transformer's (k, v) and the
# hybrid's. Every other floating state tensor is float32.
KV_CACHE_ENTRIES = {"transformer": (0, 1), "hqlt": (1, 2)}


def run_layer(layer, x, low):
    """Two calls carrying the state ([0, SPLIT) then the rest), under autocast when ``low`` is set; returns the
    output, the final state and the gradients of x and of every parameter under one random upstream gradient."""
    x = x.clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=low or torch.bfloat16, enabled=low is not None):
        y1, s1 = layer(x[:, :SPLIT])
        y2, s2 = layer(x[:, SPLIT:], s1)
    y = torch.cat([y1, y2], dim=1)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    (y.float() * g).sum().backward()
    grads = {"x": x.grad, **{n: p.grad for n, p in layer.named_parameters()}}
    return y, s2, grads


@pytest.mark.parametrize("name", layer_names())
def test_layer_under_autocast_matches_float32(name):
    """Output, carried state and every gradient within 2^-5 normwise of float32; states stay float32 (but for the
    key/value caches); parameters and their gradients stay float32."""
    torch.manual_seed(0)
    layer = build_layer(name, D_MODEL, HEADS)
    x = torch.randn(B, T, D_MODEL, generator=torch.Generator().manual_seed(0))
    y0, s0, g0 = run_layer(layer, x, None)
    y, s, g = run_layer(layer, x, torch.bfloat16)

    assert torch.isfinite(y).all()
    assert normwise_error(y, y0) <= NORM_TOL, f"output: {normwise_error(y, y0):.2e}"
    s, s0 = flat_state(s), flat_state(s0)
    assert len(s) == len(s0)
    for i, (a, b) in enumerate(zip(s, s0)):
        if not a.is_floating_point():
            assert torch.equal(a, b), f"state[{i}]"
            continue
        if i not in KV_CACHE_ENTRIES.get(name, ()):
            assert a.dtype == torch.float32, f"state[{i}] is {a.dtype}"
        assert normwise_error(a, b) <= NORM_TOL, f"state[{i}]: {normwise_error(a, b):.2e}"
    assert g.keys() == g0.keys()
    for n in g:
        assert g[n] is not None and g[n].dtype == torch.float32, f"grad {n}"
        assert normwise_error(g[n], g0[n]) <= NORM_TOL, f"grad {n}: {normwise_error(g[n], g0[n]):.2e}"


# ------------------------------------------------------------------------------------------------ the model


@pytest.mark.parametrize("name", layer_names())
def test_model_training_step_under_autocast(name):
    """One training step of a small LM (2 blocks): under autocast the loss is within 2^-5 of float32's (measured:
    2^-11 or less, a mean over tokens), the whole gradient within 2^-4 normwise and each parameter's within 2^-3
    (see the module docstring), and after an Adam step the weights are float32 and finite."""
    ids = torch.randint(0, 50, (2, 20), generator=torch.Generator().manual_seed(0))
    results = {}
    for mode in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model(layer=name, vocab_size=50, d_model=32, num_layers=2, num_heads=2)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            logits, _ = model(ids[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        opt.step()
        results[mode] = (loss, grads, model)
    (loss0, g0, _), (loss, g, model) = results["fp32"], results["bf16"]
    loss, loss0 = float(loss.detach()), float(loss0.detach())
    assert abs(loss - loss0) <= NORM_TOL * abs(loss0), f"loss {loss} vs {loss0}"
    assert g.keys() == g0.keys() and g
    for n in g:
        assert g[n].dtype == torch.float32 and torch.isfinite(g[n]).all(), n
        assert normwise_error(g[n], g0[n]) <= MODEL_GRAD_TOL, f"grad {n}: {normwise_error(g[n], g0[n]):.2e}"
    every = [torch.cat([d[n].flatten() for n in g0]) for d in (g, g0)]
    assert normwise_error(*every) <= MODEL_ALL_GRADS_TOL, f"all gradients: {normwise_error(*every):.2e}"
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
