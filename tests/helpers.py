"""Shared checks for the op tests: compare implementations on outputs, final states and all gradients."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch


def shape_id(**dims) -> str:
    """``shape_id(B=2, T=63, H=2, D=16) -> 'B2-T63-H2-D16'``."""
    return "-".join(f"{k}{v}" for k, v in dims.items())


def flat_state(state) -> list[torch.Tensor]:
    if state is None:
        return []
    if isinstance(state, torch.Tensor):
        return [state]
    return [s for s in state if s is not None]


def run_with_grads(run: Callable, impl: str, inputs: Mapping[str, torch.Tensor], seed: int = 0):
    """Runs ``run(impl, **inputs) -> (o, state)`` with dense random upstream gradients on o and on every
    state tensor; returns (o, [state...], {name: grad}) for every input that requires grad."""
    o, state = run(impl, **inputs)
    states = flat_state(state)
    g = torch.Generator().manual_seed(seed)
    loss = (o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum()
    for s in states:
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
    names = [n for n, x in inputs.items() if isinstance(x, torch.Tensor) and x.requires_grad]
    grads = torch.autograd.grad(loss, [inputs[n] for n in names], allow_unused=True)
    return o, states, dict(zip(names, grads))


def assert_impls_match(run: Callable, inputs: Mapping[str, torch.Tensor], fast: str, ref: str = "reference",
                       atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Outputs, final states and every input gradient of ``fast`` equal those of ``ref``."""
    o1, s1, g1 = run_with_grads(run, ref, inputs)
    o2, s2, g2 = run_with_grads(run, fast, inputs)
    torch.testing.assert_close(o2, o1, atol=atol, rtol=rtol, msg=lambda m: f"output: {m}")
    assert len(s1) == len(s2), f"state lengths differ: {len(s1)} vs {len(s2)}"
    for i, (a, b) in enumerate(zip(s2, s1)):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m, i=i: f"state[{i}]: {m}")
    assert g1.keys() == g2.keys()
    for n in g1:
        assert g1[n] is not None and g2[n] is not None, f"no gradient for {n}"
        torch.testing.assert_close(g2[n], g1[n], atol=atol, rtol=rtol, msg=lambda m, n=n: f"grad {n}: {m}")


def assert_two_halves(run: Callable, seq_inputs: Mapping[str, torch.Tensor], other: Mapping[str, object],
                      impl: str, split: int, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Running ``[0, split)`` then ``[split, T)`` with the carried state equals running the whole.

    ``seq_inputs`` are sliced along dim 1 (time); ``other`` (weights, initial_state, ...) is passed as is
    to the first half only for ``initial_state``."""
    whole_o, whole_s = run(impl, **seq_inputs, **other, output_final_state=True)
    first = {n: x[:, :split] for n, x in seq_inputs.items()}
    second = {n: x[:, split:] for n, x in seq_inputs.items()}
    o1, s1 = run(impl, **first, **other, output_final_state=True)
    rest = {n: x for n, x in other.items() if n != "initial_state"}
    o2, s2 = run(impl, **second, **rest, initial_state=s1, output_final_state=True)
    torch.testing.assert_close(torch.cat([o1, o2], dim=1), whole_o, atol=atol, rtol=rtol)
    for a, b in zip(flat_state(s2), flat_state(whole_s)):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def gradcheck_op(run: Callable, impl: str, inputs: Mapping[str, torch.Tensor]) -> None:
    """``torch.autograd.gradcheck`` in float64 over every input that requires grad, outputs and states."""
    names = list(inputs)

    def f(*xs):
        o, state = run(impl, **dict(zip(names, xs)))
        return (o, *flat_state(state))

    assert torch.autograd.gradcheck(f, tuple(inputs[n] for n in names), eps=1e-6, atol=1e-5, rtol=1e-3)
