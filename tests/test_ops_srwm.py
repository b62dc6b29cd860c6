"""Self-referential weight matrix: the op's specific checks (a hand-computed 2-step case, a batch-1 initial state
broadcasting, long-sequence stability of the undo backward, saved memory, gradients through a carried state,
defaults, bad inputs) and the ``srwm`` layer's own (init, options, the op on slices of x; the layer contract is
run on it by test_layers_fwp.py).
The generic checks (fused vs reference on outputs, states and every gradient; gradcheck; two halves) are in
test_ops_registry.py."""

from __future__ import annotations

import math

import pytest
import torch

from fastweights.layers import build_layer
from fastweights.ops.registry import OPS
from fastweights.ops.srwm import srwm

from . import test_layers_fwp as contract
from .helpers import run_with_grads, shape_id

SPEC = OPS["srwm"]
MATRICES = ("W_y", "W_q", "W_k", "w_b")
IMPLS = ["reference", "fused"]


def make(B, T, H, D, dtype=torch.float64, seed=0, with_state=True, requires_grad=True):
    return SPEC.make_inputs(B, T, H, D, dtype=dtype, seed=seed, with_state=with_state, requires_grad=requires_grad)


def run(impl, x, W_y, W_q, W_k, w_b, initial_state=None, output_final_state=True):
    return srwm(x, W_y, W_q, W_k, w_b, initial_state=initial_state, output_final_state=output_final_state,
                impl=impl)


def case_args(case):
    state = tuple(case.initial_state[n] for n in case.state_names) if case.initial_state else None
    return dict(case.inputs, initial_state=state)


# ---------------------------------------------------------------------------------------------- the equations


@pytest.mark.parametrize("impl", IMPLS)
def test_two_steps_by_hand(impl):
    """D = 2, one head. W_q = 0 and w_b = 0 never change (their reads of q and k are equal), so q = (1/2, 1/2)
    and b = 1/2 at every step; W_k = [[ln 3, 0], [0, 0]] makes k_1 = softmax(ln 3, 0) = (3/4, 1/4)."""
    a = math.log(3.0)
    f64 = dict(dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], **f64).view(1, 2, 1, 2)  # x_1 = e_1, x_2 = e_2
    W_y = torch.tensor([[1.0, 2.0], [3.0, 4.0]], **f64).view(1, 1, 2, 2)  # [in, out]
    W_q = torch.zeros(1, 1, 2, 2, **f64)
    W_k = torch.tensor([[a, 0.0], [0.0, 0.0]], **f64).view(1, 1, 2, 2)
    w_b = torch.zeros(1, 1, 2, 4, **f64)
    y, (dW_y, dW_q, dW_k, dw_b) = run(impl, x, W_y, W_q, W_k, w_b)

    # step 1 reads y_1 = W_y^T e_1 = (1, 2). q - k = (-1/4, 1/4): W_y^T (q - k) = (1/2, 1/2), so W_y gains
    # k_1 (1/2 * (1/2, 1/2))^T = [[3/16, 3/16], [1/16, 1/16]]; W_k^T (q - k) = (-a/4, 0), so W_k gains
    # k_1 (1/2 * (-a/4, 0))^T = [[-3a/32, 0], [-a/32, 0]].
    Wy1 = [[1 + 3 / 16, 2 + 3 / 16], [3 + 1 / 16, 4 + 1 / 16]]
    Wk1 = [[a - 3 * a / 32, 0.0], [-a / 32, 0.0]]
    # step 2 reads y_2 = W_y1^T e_2 = (3 + 1/16, 4 + 1/16); k_2 = softmax(W_k1^T e_2) = softmax(-a/32, 0).
    e = math.exp(-a / 32)
    k2 = [e / (e + 1), 1 / (e + 1)]
    p = [0.5 - k2[0], 0.5 - k2[1]]  # q_2 - k_2
    read = lambda Z: [Z[0][j] * p[0] + Z[1][j] * p[1] for j in range(2)]  # noqa: E731  Z^T (q - k)
    Wy2 = [[Wy1[i][j] + k2[i] * 0.5 * read(Wy1)[j] for j in range(2)] for i in range(2)]
    Wk2 = [[Wk1[i][j] + k2[i] * 0.5 * read(Wk1)[j] for j in range(2)] for i in range(2)]

    expected_y = torch.tensor([[1.0, 2.0], [3 + 1 / 16, 4 + 1 / 16]], **f64).view(1, 2, 1, 2)
    torch.testing.assert_close(y, expected_y, atol=1e-14, rtol=0)
    torch.testing.assert_close(dW_y, torch.tensor(Wy2, **f64).view(1, 1, 2, 2) - W_y, atol=1e-14, rtol=0)
    torch.testing.assert_close(dW_k, torch.tensor(Wk2, **f64).view(1, 1, 2, 2) - W_k, atol=1e-14, rtol=0)
    assert torch.count_nonzero(dW_q) == 0 and torch.count_nonzero(dw_b) == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_final_state_is_the_change_and_carries_on(impl):
    """The state is the change from the given matrices: a run continued from ``Z + final`` as new matrices (no
    state) equals the run continued from the same matrices and the final state."""
    case = make(2, 12, 2, 4, requires_grad=False)
    args = case_args(case)
    x = args.pop("x")
    _, s1 = run(impl, x[:, :5], **args)
    y_a, s_a = run(impl, x[:, 5:], **{n: case.inputs[n] for n in MATRICES}, initial_state=s1)
    moved = {n: case.inputs[n] + s for n, s in zip(MATRICES, s1)}
    y_b, s_b = run(impl, x[:, 5:], **moved)
    torch.testing.assert_close(y_a, y_b, atol=1e-12, rtol=1e-10)
    for n, a, b, s in zip(MATRICES, s_a, s_b, s1):
        torch.testing.assert_close(a, b + s, atol=1e-12, rtol=1e-10, msg=lambda m, n=n: f"state {n}: {m}")


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_one_matrices_broadcast(impl):
    """``[1, H, ...]`` matrices act as the same matrices repeated over the batch; their gradient is the sum over
    the batch of the repeated matrices' gradients."""
    B = 3
    case = make(B, 9, 2, 4, seed=5)
    args = case_args(case)
    shared = {n: case.inputs[n] for n in MATRICES}
    repeated = {n: w.detach().expand(B, *w.shape[1:]).clone().requires_grad_() for n, w in shared.items()}

    def call(impl, **kw):
        return run(impl, **kw)

    base = {"x": case.inputs["x"], "initial_state": args["initial_state"]}
    o1, s1, g1 = run_with_grads(call, impl, {**base, **shared})
    o2, s2, g2 = run_with_grads(call, impl, {**base, **repeated})
    torch.testing.assert_close(o1, o2, atol=1e-12, rtol=1e-10)
    for a, b in zip(s1, s2):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    for n in MATRICES:
        assert g1[n].shape == shared[n].shape and g2[n].shape == repeated[n].shape
        torch.testing.assert_close(g1[n], g2[n].sum(0, keepdim=True), atol=1e-12, rtol=1e-10,
                                   msg=lambda m, n=n: f"grad {n}: {m}")
    torch.testing.assert_close(g1["x"], g2["x"], atol=1e-12, rtol=1e-10)


# ---------------------------------------------------------------------------------------------- the fused path


def _errors(case, impl, dtype, truth=None):
    """Outputs, final states and every gradient (one upstream gradient, drawn in float64, for every dtype); with
    ``truth``, their max relative errors against it."""
    inputs = {n: t.detach().to(dtype).requires_grad_() for n, t in case.tensors().items()}
    state = tuple(inputs[f"initial_state.{n}"] for n in case.state_names)
    o, states = SPEC.call(impl, {n: inputs[n] for n in case.inputs}, state, True)
    g = torch.Generator().manual_seed(0)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(dtype)).sum() for t in (o, *states))
    grads = torch.autograd.grad(loss, list(inputs.values()))
    values = [t.double() for t in (o, *states, *grads)]
    if truth is None:
        return values
    return [((a - b).abs().max() / b.abs().max()).item() for a, b in zip(values, truth)]


@pytest.mark.parametrize("T,x_scale", [(2000, 1.0), (1000, 3.0)],
                         ids=[shape_id(B=1, T=2000, H=4, D=16) + "-x1", shape_id(B=1, T=1000, H=4, D=16) + "-x3"])
def test_long_sequence_undo_backward_is_stable(T, x_scale):
    """Far longer than the 64-step checkpoints: the fused float32 backward (undoing the updates) is about as
    accurate as the float32 step loop, against the float64 step loop; in float64 the two agree to 1e-9. A
    larger input scale makes q and k sharper and the rates larger (bigger updates to undo)."""
    case = make(1, T, 4, 16, seed=3)
    case.inputs["x"] = (case.inputs["x"] * x_scale).detach()
    truth = _errors(case, "reference", torch.float64)
    ref32 = _errors(case, "reference", torch.float32, truth)
    fused32 = _errors(case, "fused", torch.float32, truth)
    fused64 = _errors(case, "fused", torch.float64, truth)
    assert max(fused64) < 1e-9, fused64
    assert max(fused32) < 1e-3, fused32
    assert max(fused32) < 10 * max(ref32) + 1e-5, (fused32, ref32)


def test_fused_saves_far_less_than_reference():
    """The fused path keeps per-step vectors (and a matrix every 64 steps); the step loop keeps every M_t."""
    case = make(2, 128, 2, 32, dtype=torch.float32, with_state=False)

    def saved_bytes(impl):
        seen = {}

        def pack(t):
            seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            SPEC.run(case, impl)
        return sum(seen.values())

    assert saved_bytes("fused") * 4 <= saved_bytes("reference")


def test_two_halves_gradients_flow_through_carried_state():
    case = make(2, 30, 2, 4, seed=4)
    names = list(case.tensors())
    tensors = case.tensors()
    args = case_args(case)
    mats = {n: case.inputs[n] for n in MATRICES}
    o, s = run("fused", **args)
    g_whole = torch.autograd.grad(o.square().sum() + sum(t.sum() for t in s), [tensors[n] for n in names])
    x = args["x"]
    o1, s1 = run("fused", x[:, :11], **mats, initial_state=args["initial_state"])
    o2, s2 = run("fused", x[:, 11:], **mats, initial_state=s1)
    g_split = torch.autograd.grad(o1.square().sum() + o2.square().sum() + sum(t.sum() for t in s2),
                                  [tensors[n] for n in names])
    for n, ga, gb in zip(names, g_whole, g_split):
        torch.testing.assert_close(gb, ga, atol=1e-10, rtol=1e-8, msg=lambda m, n=n: f"grad {n}: {m}")


def test_defaults_partial_state_and_bfloat16():
    case = make(2, 7, 3, 8, dtype=torch.float32, requires_grad=False)
    args = case_args(case)
    state = args.pop("initial_state")
    y, s = srwm(*args.values())
    assert s is None and y.shape == (2, 7, 3, 8) and y.dtype == torch.float32
    assert torch.equal(y, srwm(*args.values(), impl="fused")[0])  # auto = fused on CPU
    outs = [run(impl, **args, initial_state=(state[0], None, None, state[3])) for impl in IMPLS]
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-5, rtol=1e-4)
    # bfloat16 inputs with float32 matrices (autocast): maths in float32, states float32, output bfloat16
    y16, s16 = run("fused", args["x"].bfloat16(), *(args[n] for n in MATRICES))
    assert y16.dtype == torch.bfloat16 and all(t.dtype == torch.float32 for t in s16)
    torch.testing.assert_close(y16.float(), run("reference", args["x"].bfloat16().float(),
                                                *(args[n] for n in MATRICES))[0], atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B,T", [(0, 5), (2, 0)], ids=["B0", "T0"])
def test_empty_calls(impl, B, T):
    case = make(max(B, 1), max(T, 1), 2, 4)
    args = case_args(case)
    args["x"] = args["x"][:B, :T]
    args["initial_state"] = tuple(s[:B] for s in args["initial_state"])
    y, s = run(impl, **args)
    assert y.shape == (B, T, 2, 4)
    for a, b in zip(s, args["initial_state"]):
        torch.testing.assert_close(a, b.detach())


def _bad(**over):
    args = case_args(make(2, 5, 2, 8, dtype=torch.float32, requires_grad=False))
    args.update(over)
    return args


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name,value", [
    ("x", torch.zeros(2, 5, 16)),
    ("W_y", torch.zeros(1, 2, 8, 7)),
    ("W_q", torch.zeros(3, 2, 8, 8)),
    ("W_k", torch.zeros(2, 8, 8)),
    ("w_b", torch.zeros(1, 2, 8, 3)),
    ("w_b", torch.zeros(1, 2, 8, 8)),
], ids=lambda v: v if isinstance(v, str) else "x".join(map(str, v.shape)))
def test_bad_shapes(impl, name, value):
    with pytest.raises(ValueError, match=name) as err:
        run(impl, **_bad(**{name: value}))
    assert "\n" not in str(err.value)


def test_bad_state_dtype_and_impl():
    args = _bad()
    state = list(args.pop("initial_state"))
    with pytest.raises(ValueError, match="initial_state.w_b"):
        run("fused", **args, initial_state=(*state[:3], torch.zeros(2, 2, 8, 8)))
    with pytest.raises(ValueError, match="initial_state.W_q"):
        run("fused", **args, initial_state=(state[0], torch.zeros(1, 2, 8, 8), *state[2:]))
    with pytest.raises(ValueError, match="initial_state"):
        run("fused", **args, initial_state=tuple(state[:3]))
    with pytest.raises(ValueError, match="impl"):
        run("chunk", **args)
    with pytest.raises(ValueError, match="W_k"):
        run("fused", **{**args, "W_k": args["W_k"].double()})


# ---------------------------------------------------------------------------------------------- the layer

LAYER = "srwm"


def test_layer_is_in_the_generic_layer_contract():
    """test_layers_fwp.py runs the contract (whole = steps = halves, done-mask reset, padding, gradients through
    carried state and not across detach, reference = auto, bad sizes) on every FastWeightLayer: srwm is one."""
    assert LAYER in contract.NAMES


def test_layer_options_keep_the_contract():
    contract.test_whole_equals_steps_equals_halves(LAYER, {"beta_init": 0.0})
    contract.test_whole_equals_steps_equals_halves(LAYER, {"impl": "reference"})


def test_layer_init_state_and_options():
    torch.manual_seed(0)
    layer = build_layer(LAYER, d_model=256, num_heads=4)  # d = 64
    W = torch.cat([layer.W_y.flatten(), layer.W_q.flatten(), layer.W_k.flatten()])
    assert layer.W_y.shape == (1, 4, 64, 64) and layer.w_b.shape == (1, 4, 64, 4)
    assert abs(W.std().item() - 1 / 8) < 0.005 and abs(W.mean().item()) < 0.005
    assert abs(layer.w_b.mean().item() + 1) < 0.05 and abs(layer.w_b.std().item() - 1 / 8) < 0.02
    assert {n for n, _ in layer.named_parameters()} == {"W_y", "W_q", "W_k", "w_b", "out_proj.weight"}

    layer = contract.make(LAYER)
    x = contract.inputs()
    y, state = layer(x)
    d = contract.D_MODEL // contract.H
    assert [tuple(s.shape) for s in state] == [(contract.B, contract.H, d, d)] * 3 + [(contract.B, contract.H, d, 4)]
    # the layer is the op on the heads' slices of x, then W_o
    o, _ = srwm(x.view(contract.B, contract.T, contract.H, d), layer.W_y, layer.W_q, layer.W_k, layer.w_b)
    torch.testing.assert_close(y, layer.out_proj(o.flatten(2)), **contract.TOL)
    # the learned matrices get gradients through the carried state too
    _, s1 = layer(x[:, :9])
    y2, _ = layer(x[:, 9:], s1)
    grads = torch.autograd.grad(y2.square().sum(), [layer.W_y, layer.W_q, layer.W_k, layer.w_b])
    assert all(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("opts,field", [({"head_dim": 4}, "head_dim"), ({"beta_init": "x"}, "beta_init"),
                                        ({"beta_init": float("nan")}, "beta_init"), ({"impl": "chunk"}, "impl")],
                         ids=["head_dim=4", "beta_init=x", "beta_init=nan", "impl=chunk"])
def test_layer_bad_options(opts, field):
    with pytest.raises(ValueError, match=field):
        build_layer(LAYER, d_model=contract.D_MODEL, num_heads=contract.H, **opts)
