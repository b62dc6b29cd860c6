"""The library API on unusual and bad inputs, for every op of the registry and every impl: empty batches and
sequences work (an empty output; for T=0 the initial state comes back unchanged), and integer tensors, mixed
dtypes and tensors on another device raise a one-line ValueError naming the argument. Also the fast-weight
layers on empty batches and sequences."""

from __future__ import annotations

import re

import pytest
import torch

from fastweights.layers import build_layer, layer_names
from fastweights.layers.fwp import FastWeightLayer
from fastweights.ops.registry import OPS

from .helpers import flat_state, shape_id

B, T, H, D = 2, 5, 2, 4


def spec_impls():
    for spec in OPS.values():
        for variant, opts in spec.variants.items():
            prefix = spec.name if len(spec.variants) == 1 else f"{spec.name}-{variant}"
            for impl in spec.impls:
                yield spec, opts, impl, f"{prefix}-{impl}"


def cases(extra=((None, ""),)):
    return [pytest.param(spec, opts, impl, x, id=f"{pid}{suffix}") for spec, opts, impl, pid in spec_impls()
            for x, suffix in extra]


def make(spec, opts, B=B, T=T, **kw):
    return spec.make_inputs(B, T, H, D, dtype=torch.float32, seed=0, **opts, **kw)


def expected_shapes(spec, opts, B, T):
    """The output's and final state's shapes, read off a call with one step."""
    o, state = spec.run(make(spec, opts, B=max(B, 1), T=1, with_state=False, requires_grad=False), "reference")
    return (B, T, *o.shape[2:]), [(B, *s.shape[1:]) for s in flat_state(state)]


EMPTY = [((0, T), shape_id(B=0, T=T, H=H, D=D)), ((B, 0), shape_id(B=B, T=0, H=H, D=D)),
         ((0, 0), shape_id(B=0, T=0, H=H, D=D))]


@pytest.mark.parametrize("with_state", [True, False], ids=["state", "nostate"])
@pytest.mark.parametrize("spec,opts,impl,bt", cases([(bt, f"-{i}") for bt, i in EMPTY]))
def test_empty_batch_or_sequence(spec, opts, impl, bt, with_state):
    """An empty output; the final state is the initial one (zeros without one), and backward runs."""
    b, t = bt
    case = make(spec, opts, B=b, T=t, with_state=with_state)
    o_shape, state_shapes = expected_shapes(spec, opts, b, t)
    o, state = spec.run(case, impl)
    states = flat_state(state)
    assert tuple(o.shape) == o_shape and o.dtype == torch.float32
    assert [tuple(s.shape) for s in states] == state_shapes
    for name, s in zip(case.state_names, states):
        expect = case.initial_state[name] if with_state else torch.zeros_like(s)
        torch.testing.assert_close(s, expect.detach(), atol=0, rtol=0, msg=lambda m, name=name: f"{name}: {m}")
    loss = o.sum() + sum(s.sum() for s in states)
    names = list(case.tensors())
    grads = torch.autograd.grad(loss, list(case.tensors().values()))
    for name, g in zip(names, grads):  # the initial state passes straight through (T=0) or is empty (B=0)
        expect = torch.ones_like(g) if name.startswith("initial_state.") else torch.zeros_like(g)
        torch.testing.assert_close(g, expect, atol=0, rtol=0, msg=lambda m, name=name: f"grad {name}: {m}")
    o2, none = spec.run(case, impl, output_final_state=False)
    assert none is None and o2.shape == o.shape


def _all_tensors(spec, opts):
    """Every input and initial-state entry of the op, by the name its error messages use."""
    return [n for n in make(spec, opts, requires_grad=False).tensors()]


def bad_cases():
    out = []
    for spec, opts, impl, pid in spec_impls():
        for name in _all_tensors(spec, opts):
            out.append(pytest.param(spec, opts, impl, name, id=f"{pid}-{name}"))
    return out


def _call_with(spec, opts, impl, name, change):
    case = make(spec, opts, requires_grad=False, with_state=True)
    tensors = case.tensors()
    tensors[name] = change(tensors[name])
    inputs = {n: tensors[n] for n in case.inputs}
    state = tuple(tensors[f"initial_state.{n}"] for n in case.state_names)
    return spec.call(impl, inputs, state, True, **case.options)


@pytest.mark.parametrize("spec,opts,impl,name", bad_cases())
def test_integer_tensor_is_a_value_error_naming_it(spec, opts, impl, name):
    with pytest.raises(ValueError, match=f"^{re.escape(name)} .*dtype torch.int64") as e:
        _call_with(spec, opts, impl, name, lambda x: x.round().long())
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("spec,opts,impl,name", bad_cases())
def test_mixed_dtypes_are_a_value_error_naming_them(spec, opts, impl, name):
    """One tensor in float64 among float32 ones (float64 is not float32's accumulation dtype either)."""
    with pytest.raises(ValueError, match=re.escape(name)) as e:
        _call_with(spec, opts, impl, name, lambda x: x.double())
    assert "dtype" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("spec,opts,impl,name", bad_cases())
def test_another_device_is_a_value_error_naming_it(spec, opts, impl, name):
    """One tensor on the meta device among CPU ones (no GPU needed to see the check)."""
    first = next(iter(make(spec, opts, requires_grad=False).inputs))
    with pytest.raises(ValueError, match=re.escape(name)) as e:
        _call_with(spec, opts, impl, name, lambda x: x.to("meta"))
    msg = str(e.value)
    assert "device" in msg and ("meta" in msg if name != first else "cpu" in msg) and "\n" not in msg


@pytest.mark.parametrize("spec,opts,impl,x", cases())
def test_bfloat16_inputs_take_a_float32_state(spec, opts, impl, x):
    """A final state comes back in float32 for bfloat16 inputs, and can be passed back in."""
    case = make(spec, opts, requires_grad=False)
    lo = {n: t.to(torch.bfloat16) for n, t in case.inputs.items()}
    state = tuple(case.initial_state[n] for n in case.state_names)  # float32
    o, final = spec.call(impl, lo, state, True, **case.options)
    assert o.dtype == torch.bfloat16 and all(s.dtype == torch.float32 for s in flat_state(final))
    o2, _ = spec.call(impl, lo, final, True, **case.options)
    assert o2.dtype == torch.bfloat16


# ------------------------------------------------------------------------------------------------ the layers

FWP_LAYERS = [n for n in layer_names() if isinstance(build_layer(n, d_model=8, num_heads=2), FastWeightLayer)]


@pytest.mark.parametrize("name", FWP_LAYERS)
@pytest.mark.parametrize("b,t", [(0, 5), (2, 0), (0, 0)], ids=[shape_id(B=b, T=t, D=16, H=2) for b, t in
                                                               [(0, 5), (2, 0), (0, 0)]])
def test_layer_on_empty_batch_or_sequence(name, b, t):
    torch.manual_seed(0)
    layer = build_layer(name, d_model=16, num_heads=2)
    _, state = layer(torch.randn(max(b, 1), 3, 16))
    state = tuple(s[:b] for s in state)
    y, final = layer(torch.randn(b, t, 16), state)
    assert y.shape == (b, t, 16)
    for a, s in zip(final, state):  # T=0: the state passes through; B=0: both empty
        torch.testing.assert_close(a, s, atol=0, rtol=0)


@pytest.mark.parametrize("name", FWP_LAYERS)
def test_layer_integer_input_is_a_value_error(name):
    layer = build_layer(name, d_model=16, num_heads=2)
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        layer(torch.zeros(2, 3, 16, dtype=torch.long))
