"""The generic op checks, for every op of the registry (``fastweights.ops.registry.OPS``), every variant and
every fast path: outputs, final states and every gradient (initial state included) against the step-loop
reference; gradcheck in float64; two halves with the carried state equal the whole sequence.
Op-specific checks (known values, options, memory, bad shapes) stay in ``test_ops_<op>.py``."""

from __future__ import annotations

import pytest
import torch

import fastweights.ops as ops
from fastweights.ops.registry import OPS

from .helpers import assert_impls_match, case_runner, flat_state, gradcheck_op, shape_id

# T=1, a part-filled chunk (63) and several chunks (100), at three head sizes; one odd B/H/long-T shape
SHAPES = [(2, T, 2, D) for T in (1, 63, 100) for D in (16, 32, 64)] + [(1, 130, 3, 16)]
# float32 with an initial state on every shape; the other three dtype x state pairings on a diagonal of the
# T x D grid each (every T and every D in each)
DIAG_A = [(2, 1, 2, 16), (2, 63, 2, 64), (2, 100, 2, 32)]
DIAG_B = [(2, 1, 2, 64), (2, 63, 2, 32), (2, 100, 2, 16)]
GRID = ([(s, "f32", True) for s in SHAPES] + [(s, "f64", False) for s in DIAG_A]
        + [(s, "f32", False) for s in DIAG_B] + [(s, "f64", True) for s in DIAG_B])
DTYPES = {"f32": torch.float32, "f64": torch.float64}


def variants():
    """(spec, variant name, variant options, id prefix) for every op and variant."""
    for spec in OPS.values():
        for name, opts in spec.variants.items():
            yield spec, opts, spec.name if len(spec.variants) == 1 else f"{spec.name}-{name}"


def params(impls: str, grid):
    """One case per op variant x impl (``"fast"``: the fast paths; ``"all"``: with the reference) x grid
    entry ``((B, T, H, D), dtype name, with initial state)``; ids like ``delta_rule-chunk-B2-T63-H2-D16-f32-state``."""
    out = []
    for spec, opts, prefix in variants():
        for impl in (spec.fast_impls if impls == "fast" else spec.impls):
            for (B, T, H, D), dt, st in grid:
                sid = "-".join([prefix, impl, shape_id(B=B, T=T, H=H, D=D), dt, "state" if st else "nostate"])
                out.append(pytest.param(spec, opts, impl, (B, T, H, D), DTYPES[dt], st, id=sid))
    return out


def test_every_public_op_has_a_spec():
    public = {n for n in ops.__all__ if callable(getattr(ops, n))}
    assert public == set(OPS), f"ops without a registry spec: {public - set(OPS)}; specs of no op: {set(OPS) - public}"
    for spec in OPS.values():
        assert spec.impls[0] == "reference" and spec.fast_impls, spec.name
        assert getattr(ops, spec.name) is spec.fn


@pytest.mark.parametrize("spec,opts,impl,shape,dtype,with_state",
                         params("fast", GRID))
def test_fast_path_matches_reference(spec, opts, impl, shape, dtype, with_state):
    """Outputs, every final state and the gradients of every input and initial-state tensor."""
    case = spec.make_inputs(*shape, dtype=dtype, seed=0, with_state=with_state, **opts)
    run = case_runner(spec, case)
    o, state = run(impl, **case.tensors())
    assert o.dtype == dtype and o.shape[:3] == shape[:3]
    assert len(flat_state(state)) == len(case.state_names)
    assert_impls_match(run, case.tensors(), fast=impl, **spec.tolerances[dtype])


@pytest.mark.parametrize("spec,opts,impl,shape,dtype,with_state",
                         params("all", [((1, 3, 1, 2), "f64", True), ((1, 3, 1, 2), "f64", False)]))
def test_gradcheck(spec, opts, impl, shape, dtype, with_state):
    """float64 gradcheck of outputs and final states on a tiny shape (two chunks of 2 steps, the last one
    part-filled, for the chunkwise paths)."""
    case = spec.make_inputs(*shape, dtype=dtype, seed=1, with_state=with_state, **opts)
    options = {"chunk_size": 2} if spec.chunked else {}
    gradcheck_op(case_runner(spec, case, **options), impl, case.tensors())


@pytest.mark.parametrize("spec,opts,impl,shape,dtype,with_state",
                         params("all", [((2, 40, 2, 8), "f64", True), ((2, 40, 2, 8), "f64", False)]))
def test_two_halves_with_carried_state_equal_whole(spec, opts, impl, shape, dtype, with_state):
    """Steps [0, 17) then [17, 40) from the first half's final state = the whole sequence (from the initial
    state, or from zeros), outputs and final states (chunks of 16: both halves end in a part-filled chunk)."""
    case = spec.make_inputs(*shape, dtype=dtype, seed=2, with_state=with_state, requires_grad=False, **opts)
    options = {**case.options, **({"chunk_size": 16} if spec.chunked else {})}
    state0 = tuple(case.initial_state[n] for n in case.state_names) if with_state else None
    split = 17

    def part(sl, state):
        inputs = {n: (x if n in case.weights else x[:, sl]) for n, x in case.inputs.items()}
        return spec.call(impl, inputs, state, True, **options)

    whole_o, whole_s = part(slice(None), state0)
    o1, s1 = part(slice(0, split), state0)
    o2, s2 = part(slice(split, None), s1)
    tol = spec.tolerances[dtype]
    torch.testing.assert_close(torch.cat([o1, o2], dim=1), whole_o, **tol)
    assert len(flat_state(s2)) == len(flat_state(whole_s)) == len(case.state_names)
    for name, a, b in zip(case.state_names, flat_state(s2), flat_state(whole_s)):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"state {name}: {m}")
