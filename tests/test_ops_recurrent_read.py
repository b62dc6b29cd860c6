"""delta_rnn and delta_lstm, op-specific checks: D_k != D_v, partial initial states, the default impl, bfloat16,
no-grad inference, the Delta LSTM's feedforward part, bad inputs. Both ops share the shape of a test: feedforward
delta nets plus recurrent delta-rule matrices read with softmax(previous output); the Delta LSTM stacks its 3 gates
in dim 3. The generic checks (fused vs reference, gradcheck, two halves) are in test_ops_registry.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from fastweights.ops.delta_lstm import delta_lstm
from fastweights.ops.delta_rnn import delta_rnn
from fastweights.ops.delta_rule import delta_rule
from tests.helpers import assert_impls_match

SEQ = ("q", "k", "v", "beta", "rk", "rv", "rbeta")


@dataclass(frozen=True)
class Op:
    name: str
    fn: Callable
    gates: tuple  # () for the Delta RNN, (3,) for the Delta LSTM
    state: tuple  # initial-state input names, in the op's state order

    def run(self, impl, *args, initial_state=None, output_final_state=True, **named):
        seq = {n: named.pop(n) for n in SEQ if n in named}
        if args:
            seq = dict(zip(SEQ, args))
        if initial_state is None and any(named.get(s) is not None for s in self.state):
            initial_state = tuple(named.get(s) for s in self.state)
        return self.fn(*(seq[n] for n in SEQ), initial_state=initial_state,
                       output_final_state=output_final_state, impl=impl)

    def make_inputs(self, B, T, H, Dk, Dv, dtype=torch.float32, init=False, seed=0):
        """Realistic inputs: softmax keys, sigmoid betas; a small random initial state."""
        g = torch.Generator().manual_seed(seed)
        r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
        G = self.gates
        x = {"q": r(B, T, H, *G, Dk), "k": torch.softmax(r(B, T, H, *G, Dk), -1), "v": r(B, T, H, *G, Dv),
             "beta": torch.sigmoid(r(B, T, H, *G)), "rk": torch.softmax(r(B, T, H, *G, Dv), -1),
             "rv": r(B, T, H, *G, Dv), "rbeta": torch.sigmoid(r(B, T, H, *G))}
        if init:
            x.update(S0=0.3 * r(B, H, *G, Dk, Dv), R0=0.3 * r(B, H, *G, Dv, Dv))
            x.update({s: r(B, H, Dv) for s in self.state[2:]})
        return {n: t.to(dtype).requires_grad_() for n, t in x.items()}


DELTA_RNN = Op("delta_rnn", delta_rnn, (), ("S0", "R0", "y0"))
DELTA_LSTM = Op("delta_lstm", delta_lstm, (3,), ("S0", "R0", "c0", "h0"))
OPS = [pytest.param(DELTA_RNN, id="delta_rnn"), pytest.param(DELTA_LSTM, id="delta_lstm")]

TOLS = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-9)}


@pytest.mark.parametrize("Dk,Dv", [(16, 32), (32, 16)], ids=["Dk16-Dv32", "Dk32-Dv16"])
@pytest.mark.parametrize("op", OPS)
def test_fused_matches_reference_rectangular(op, Dk, Dv):
    assert_impls_match(op.run, op.make_inputs(2, 40, 3, Dk, Dv, torch.float64, init=True), "fused",
                       **TOLS[torch.float64])


@pytest.mark.parametrize("op", OPS)
def test_partial_initial_state(op):
    """Any state tensor may be None (zeros); gradients reach the ones given."""
    x = op.make_inputs(2, 17, 2, 8, 8, torch.float64, init=True)
    del x["S0"], x[op.state[-1]]
    assert_impls_match(op.run, x, "fused", **TOLS[torch.float64])


@pytest.mark.parametrize("op", OPS)
def test_auto_is_fused_on_cpu_and_no_state_by_default(op):
    x = op.make_inputs(2, 9, 2, 8, 8)
    o, s = op.fn(*(x[n] for n in SEQ))
    assert s is None and o.shape == (2, 9, 2, 8) and o.dtype == torch.float32
    o2, _ = op.run("fused", *(x[n] for n in SEQ))
    torch.testing.assert_close(o, o2, atol=0, rtol=0)


@pytest.mark.parametrize("op", OPS)
def test_bf16_smoke(op):
    x = op.make_inputs(2, 33, 2, 16, 16, torch.float32, init=False)
    xb = {n: t.detach().to(torch.bfloat16).requires_grad_() for n, t in x.items()}
    o, state = op.run("fused", *(xb[n] for n in SEQ))
    assert o.dtype == torch.bfloat16 and all(s.dtype == torch.float32 for s in state)
    ref, _ = op.run("reference", *(xb[n].detach().float() for n in SEQ))
    torch.testing.assert_close(o.float(), ref, atol=3e-2, rtol=2e-2)
    o.float().square().sum().backward()
    assert all(xb[n].grad is not None and xb[n].grad.dtype == torch.bfloat16 for n in SEQ)


@pytest.mark.parametrize("op", OPS)
def test_no_grad_inference(op):
    x = op.make_inputs(2, 20, 2, 8, 8)
    with torch.no_grad():
        o, _ = op.run("fused", *(x[n] for n in SEQ))
        ref, _ = op.run("reference", *(x[n] for n in SEQ))
    torch.testing.assert_close(o, ref, atol=1e-5, rtol=1e-4)


def test_delta_lstm_feedforward_part_is_delta_rule():
    """With zero recurrent betas (R stays 0), the gates are exactly the three delta nets' outputs."""
    x = {n: t.detach() for n, t in DELTA_LSTM.make_inputs(2, 12, 2, 8, 8, torch.float64).items()}
    x["rbeta"] = torch.zeros_like(x["rbeta"])
    o, _ = DELTA_LSTM.run("reference", *(x[n] for n in SEQ))
    z = torch.stack([delta_rule(x["q"][:, :, :, g], x["k"][:, :, :, g], x["v"][:, :, :, g], x["beta"][..., g],
                                impl="reference")[0] for g in range(3)], dim=3)
    i, u, og = torch.sigmoid(z[:, :, :, 0]), z[:, :, :, 1], torch.sigmoid(z[:, :, :, 2])
    c = torch.zeros_like(u[:, 0])
    hs = []
    for t in range(z.shape[1]):
        c = i[:, t] * u[:, t] + (1 - i[:, t]) * c
        hs.append(c * og[:, t])
    torch.testing.assert_close(o, torch.stack(hs, 1))


BAD = [
    (DELTA_RNN, "rk-Dk-not-Dv", {"rk": torch.zeros(2, 5, 3, 4)}, r"rk must have shape"),
    (DELTA_RNN, "rv-5d", {"rv": torch.zeros(2, 5, 3, 6, 1)}, r"rv must have shape"),
    (DELTA_RNN, "rbeta-4d", {"rbeta": torch.zeros(2, 5, 3, 1)}, r"rbeta must have shape"),
    (DELTA_RNN, "rbeta-short-T", {"rbeta": torch.zeros(2, 4, 3)}, r"rbeta must have shape"),
    (DELTA_RNN, "q-3d", {"q": torch.zeros(2, 5, 3)}, r"q must have shape"),
    (DELTA_RNN, "v-heads", {"v": torch.zeros(2, 5, 2, 6)}, r"v must share"),
    (DELTA_RNN, "beta-heads", {"beta": torch.zeros(2, 5, 4)}, r"beta must have shape"),
    (DELTA_RNN, "state-R-shape",
     {"initial_state": (torch.zeros(2, 3, 4, 6), torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 6))},
     r"initial_state\.R must have shape \(2, 3, 6, 6\)"),
    (DELTA_RNN, "state-length", {"initial_state": (torch.zeros(2, 3, 4, 6), torch.zeros(2, 3, 6, 6))},
     r"initial_state must be"),
    (DELTA_RNN, "impl", {"impl": "chunk"}, r"impl must be one of"),
    (DELTA_LSTM, "q-4d", {"q": torch.zeros(2, 5, 3, 4), "k": torch.zeros(2, 5, 3, 4)},
     r"q must have shape \[B, T, H, 3, D_k\]"),
    (DELTA_LSTM, "two-gates", {"q": torch.zeros(2, 5, 3, 2, 4), "k": torch.zeros(2, 5, 3, 2, 4),
                               "v": torch.zeros(2, 5, 3, 2, 6), "beta": torch.zeros(2, 5, 3, 2)},
     r"stack the 3 gates"),
    (DELTA_LSTM, "k-shape", {"k": torch.zeros(2, 5, 3, 3, 5)}, r"q and k must have the same shape"),
    (DELTA_LSTM, "v-heads", {"v": torch.zeros(2, 5, 2, 3, 6)}, r"v must share"),
    (DELTA_LSTM, "beta-3d", {"beta": torch.zeros(2, 5, 3)}, r"beta must have shape"),
    (DELTA_LSTM, "rk-Dk-not-Dv", {"rk": torch.zeros(2, 5, 3, 3, 4)}, r"rk must have shape"),
    (DELTA_LSTM, "rv-4d", {"rv": torch.zeros(2, 5, 3, 6)}, r"rv must have shape"),
    (DELTA_LSTM, "rbeta-3d", {"rbeta": torch.zeros(2, 5, 3)}, r"rbeta must have shape"),
    (DELTA_LSTM, "state-R-no-gates", {"initial_state": (None, torch.zeros(2, 3, 6, 6), None, None)},
     r"initial_state\.R must have shape"),
    (DELTA_LSTM, "state-c-shape", {"initial_state": (None, None, torch.zeros(2, 3, 4), None)},
     r"initial_state\.c must have shape"),
    (DELTA_LSTM, "state-length", {"initial_state": (None, None, None)}, r"initial_state must be"),
    (DELTA_LSTM, "impl", {"impl": "chunk"}, r"impl must be one of"),
]


@pytest.mark.parametrize("op,change,match", [pytest.param(o, c, m, id=f"{o.name}-{i}") for o, i, c, m in BAD])
def test_bad_inputs(op, change, match):
    x = {n: t.detach() for n, t in op.make_inputs(2, 5, 3, 4, 6).items()}
    change = dict(change)
    args = [change.pop(n, x[n]) for n in SEQ]
    with pytest.raises(ValueError, match=match):
        op.fn(*args, **change)

