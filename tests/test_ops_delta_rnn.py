"""delta_rnn: the fused CPU path against the step-loop reference (outputs, final states, every gradient)."""

from __future__ import annotations

import pytest
import torch

from fastweights.ops.delta_rnn import delta_rnn
from tests.helpers import assert_impls_match, assert_two_halves, gradcheck_op, shape_id

SEQ = ("q", "k", "v", "beta", "rk", "rv", "rbeta")


def run(impl, q, k, v, beta, rk, rv, rbeta, S0=None, R0=None, y0=None, initial_state=None,
        output_final_state=True):
    if initial_state is None and (S0 is not None or R0 is not None or y0 is not None):
        initial_state = (S0, R0, y0)
    return delta_rnn(q, k, v, beta, rk, rv, rbeta, initial_state=initial_state,
                     output_final_state=output_final_state, impl=impl)


def make_inputs(B, T, H, Dk, Dv, dtype=torch.float32, init=False, seed=0):
    """Realistic inputs: softmax keys, sigmoid betas; a small random initial state."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    x = {
        "q": r(B, T, H, Dk), "k": torch.softmax(r(B, T, H, Dk), -1), "v": r(B, T, H, Dv),
        "beta": torch.sigmoid(r(B, T, H)),
        "rk": torch.softmax(r(B, T, H, Dv), -1), "rv": r(B, T, H, Dv), "rbeta": torch.sigmoid(r(B, T, H)),
    }
    if init:
        x.update(S0=0.3 * r(B, H, Dk, Dv), R0=0.3 * r(B, H, Dv, Dv), y0=r(B, H, Dv))
    return {n: t.to(dtype).requires_grad_() for n, t in x.items()}


SHAPES = [pytest.param(T, D, id=shape_id(B=2, T=T, H=2, D=D)) for T in (1, 63, 100) for D in (16, 32, 64)]
# float64 and the zero-state runs cover the T x D grid along two diagonals (keeps the file fast)
DIAG_A = [pytest.param(T, D, id=shape_id(B=2, T=T, H=2, D=D)) for T, D in ((1, 16), (63, 64), (100, 32))]
DIAG_B = [pytest.param(T, D, id=shape_id(B=2, T=T, H=2, D=D)) for T, D in ((1, 64), (63, 32), (100, 16))]
TOLS = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-9)}


@pytest.mark.parametrize("T,D", SHAPES)
def test_fused_matches_reference_float32(T, D):
    x = make_inputs(2, T, 2, D, D, torch.float32, init=True)
    assert_impls_match(run, x, "fused", **TOLS[torch.float32])


@pytest.mark.parametrize("T,D", DIAG_A)
def test_fused_matches_reference_float64(T, D):
    x = make_inputs(2, T, 2, D, D, torch.float64, init=True)
    assert_impls_match(run, x, "fused", **TOLS[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("T,D", DIAG_B)
def test_fused_matches_reference_zero_state(T, D, dtype):
    x = make_inputs(2, T, 2, D, D, dtype, init=False)
    assert_impls_match(run, x, "fused", **TOLS[dtype])


@pytest.mark.parametrize("Dk,Dv", [(16, 32), (32, 16)], ids=["Dk16-Dv32", "Dk32-Dv16"])
def test_fused_matches_reference_rectangular(Dk, Dv):
    x = make_inputs(2, 40, 3, Dk, Dv, torch.float64, init=True)
    assert_impls_match(run, x, "fused", atol=1e-10, rtol=1e-9)


def test_partial_initial_state():
    """Any of S, R, y may be None (zeros); gradients reach the ones given."""
    x = make_inputs(2, 17, 2, 8, 8, torch.float64, init=True)
    del x["S0"], x["y0"]
    assert_impls_match(run, x, "fused", atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("impl", ["reference", "fused"])
@pytest.mark.parametrize("init", [False, True], ids=["zero_state", "init_state"])
def test_gradcheck(impl, init):
    x = make_inputs(1, 3, 1, 2, 3, torch.float64, init, seed=1)
    gradcheck_op(run, impl, x)


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_two_halves(impl):
    x = make_inputs(2, 50, 2, 16, 16, torch.float64, init=True)
    seq = {n: x[n] for n in SEQ}
    init = (x["S0"], x["R0"], x["y0"])
    assert_two_halves(run, seq, {"initial_state": init}, impl, split=21, atol=1e-10, rtol=1e-9)


def test_auto_is_fused_on_cpu_and_no_state_by_default():
    x = make_inputs(2, 9, 2, 8, 8)
    o, s = delta_rnn(*(x[n] for n in SEQ))
    assert s is None and o.shape == (2, 9, 2, 8) and o.dtype == torch.float32
    o2, _ = run("fused", *(x[n] for n in SEQ))
    torch.testing.assert_close(o, o2, atol=0, rtol=0)


def test_bf16_smoke():
    x = make_inputs(2, 33, 2, 16, 16, torch.float32, init=False)
    xb = {n: t.detach().to(torch.bfloat16).requires_grad_() for n, t in x.items()}
    o, (S, R, y) = run("fused", *(xb[n] for n in SEQ))
    assert o.dtype == torch.bfloat16 and S.dtype == R.dtype == y.dtype == torch.float32
    ref, _ = run("reference", *(xb[n].detach().float() for n in SEQ))
    torch.testing.assert_close(o.float(), ref, atol=3e-2, rtol=2e-2)
    o.float().square().sum().backward()
    assert all(xb[n].grad is not None and xb[n].grad.dtype == torch.bfloat16 for n in SEQ)


def test_no_grad_inference():
    x = make_inputs(2, 20, 2, 8, 8)
    with torch.no_grad():
        o, s = run("fused", *(x[n] for n in SEQ))
        ref, _ = run("reference", *(x[n] for n in SEQ))
    torch.testing.assert_close(o, ref, atol=1e-5, rtol=1e-4)


def _bad(**over):
    x = {n: t.detach() for n, t in make_inputs(2, 5, 3, 4, 6).items()}
    args = [over.pop(n, x[n]) for n in SEQ]
    return args, over


@pytest.mark.parametrize("change,match", [
    ({"rk": torch.zeros(2, 5, 3, 4)}, r"rk must have shape"),
    ({"rv": torch.zeros(2, 5, 3, 6, 1)}, r"rv must have shape"),
    ({"rbeta": torch.zeros(2, 5, 3, 1)}, r"rbeta must have shape"),
    ({"rbeta": torch.zeros(2, 4, 3)}, r"rbeta must have shape"),
    ({"q": torch.zeros(2, 5, 3)}, r"q must have shape"),
    ({"v": torch.zeros(2, 5, 2, 6)}, r"v must share"),
    ({"beta": torch.zeros(2, 5, 4)}, r"beta must have shape"),
    ({"initial_state": (torch.zeros(2, 3, 4, 6), torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 6))},
     r"initial_state\.R must have shape \(2, 3, 6, 6\)"),
    ({"initial_state": (torch.zeros(2, 3, 4, 6), torch.zeros(2, 3, 6, 6))}, r"initial_state must be"),
    ({"impl": "chunk"}, r"impl must be one of"),
], ids=["rk-Dk-not-Dv", "rv-5d", "rbeta-4d", "rbeta-short-T", "q-3d", "v-heads", "beta-heads",
        "state-R-shape", "state-length", "impl"])
def test_bad_inputs(change, match):
    args, kw = _bad(**change)
    with pytest.raises(ValueError, match=match):
        delta_rnn(*args, **kw)


def test_empty_sequence():
    args, _ = _bad()
    args = [a[:, :0] for a in args]
    with pytest.raises(ValueError, match="at least 1"):
        delta_rnn(*args)
