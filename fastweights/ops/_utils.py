"""Shared plumbing for the fast-weight ops: input checks, dtype policy, impl dispatch, empty calls.

Conventions (every op):
  * q, k, v are ``[B, T, H, D]``; beta is ``[B, T, H]``; state matrices are ``[B, H, D_k, D_v]``.
  * "write then read": the update at step t happens before the read at step t.
  * ``initial_state=None`` means every fast weight starts at zero.
  * ops return ``(o, final_state)``; ``final_state`` is None unless ``output_final_state=True``.
  * maths runs in ``acc_dtype(x.dtype)``: float64 stays float64, everything else runs in float32.
    Outputs come back in the input dtype; states are kept in the accumulation dtype.
  * every tensor input shares one floating-point dtype and one device (:func:`check_dtypes_and_device`); initial
    states and slow-net weights may also be in the accumulation dtype (a returned final state can be passed
    back; float32 parameters meet bfloat16 activations under autocast).
  * B == 0 or T == 0 is a valid call (:func:`empty_result`): an empty output and, as the final state, the
    initial state unchanged (zeros where it is None).
  * under ``torch.autocast`` every op is a float32 op (:func:`autocast_float32`, the decorator on every public
    op): it runs with autocast off on float32 copies of its float16/bfloat16 inputs, so the state, the
    intra-chunk triangular solves and the recurrences stay float32, and it returns float32 outputs and states.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping, Sequence

import torch

from ._step import STEP_MAX_T, STEP_MAX_T_GRAD

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the maths runs in: float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_positive_int(name: str, value) -> int:
    """Returns ``value`` if it is a positive int (bools are not ints here), else raises a ValueError naming it."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_tensor(name: str, x: torch.Tensor, ndim: int, layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def check_qkv(q, k, v, beta=None, *, prefix: str = ""):
    """Checks the standard layout and returns (B, T, H, Dk, Dv)."""
    n = lambda s: prefix + s  # noqa: E731
    check_tensor(n("q"), q, 4, "[B, T, H, D_k]")
    check_tensor(n("k"), k, 4, "[B, T, H, D_k]")
    check_tensor(n("v"), v, 4, "[B, T, H, D_v]")
    if q.shape != k.shape:
        raise ValueError(f"{n('q')} and {n('k')} must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"{n('v')} must share [B, T, H] with {n('q')}, got {tuple(v.shape)} and {tuple(q.shape)}"
        )
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    if beta is not None:
        check_tensor(n("beta"), beta, 3, "[B, T, H]")
        if beta.shape != q.shape[:3]:
            raise ValueError(f"{n('beta')} must have shape {tuple(q.shape[:3])}, got {tuple(beta.shape)}")
    return B, T, H, Dk, Dv


def check_state(name: str, s, shape: Sequence[int]) -> torch.Tensor | None:
    if s is None:
        return None
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(s).__name__}")
    if tuple(s.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(s.shape)}")
    return s


def unpack_state(initial_state, names: Sequence[str], shapes: Sequence[Sequence[int]]):
    """Validates a tuple state (or None) and returns a tuple of tensors/None of the right length."""
    if initial_state is None:
        return (None,) * len(names)
    if len(names) == 1 and isinstance(initial_state, torch.Tensor):
        initial_state = (initial_state,)
    if not isinstance(initial_state, (tuple, list)) or len(initial_state) != len(names):
        raise ValueError(
            f"initial_state must be None or a tuple ({', '.join(names)}), got {type(initial_state).__name__}"
            + (f" of length {len(initial_state)}" if isinstance(initial_state, (tuple, list)) else "")
        )
    return tuple(check_state(f"initial_state.{n}", s, sh) for n, s, sh in zip(names, initial_state, shapes))


def use_step_path(steps: int | None) -> bool:
    """Whether ``impl="auto"`` runs a call of ``steps`` time steps on the step path: at most
    :data:`._step.STEP_MAX_T` steps, or :data:`._step.STEP_MAX_T_GRAD` while autograd records."""
    if steps is None:
        return False
    return steps <= (STEP_MAX_T_GRAD if torch.is_grad_enabled() else STEP_MAX_T)


def resolve_impl(op: str, impl: str, available: Mapping[str, Callable], auto_order: Sequence[str],
                 device: torch.device, steps: int | None = None,
                 few_steps_order: Sequence[str] = ("step",)) -> Callable:
    """Returns the function for ``impl``. ``"auto"`` takes the first usable path of ``few_steps_order`` for a call
    of a few time steps (:func:`use_step_path`; by default the op's step path, ``available["step"]``, see
    :mod:`._step`), otherwise the first of ``auto_order`` usable on ``device``. Every op chooses its path here."""
    if impl == "auto":
        few = "step" in available and use_step_path(steps)
        for name in (few_steps_order if few else auto_order):
            if name == "fused" and device.type != "cpu":
                continue  # the fused step kernels are CPU (numba) code
            return available[name]
        return available["reference"]
    if impl not in available:
        raise ValueError(f"{op}: impl must be one of {['auto', *available]}, got {impl!r}")
    if impl == "fused" and device.type != "cpu":
        raise ValueError(f"{op}: impl='fused' runs on CPU tensors only, got device {device}")
    return available[impl]


def check_dtypes_and_device(inputs: Sequence[tuple[str, torch.Tensor | None]],
                            acc_ok: Sequence[tuple[str, torch.Tensor | None]] = ()) -> torch.dtype:
    """Every tensor shares the first input's floating-point dtype and device; returns that dtype.

    ``inputs`` and ``acc_ok`` are (name, tensor) pairs (None entries are skipped); the shapes are checked
    elsewhere. The ``acc_ok`` tensors may also be in the accumulation dtype: initial states (the ops return
    states in it) and slow-net weights (float32 parameters with bfloat16 activations under autocast)."""
    first, x0 = inputs[0]
    if not x0.is_floating_point():
        raise ValueError(f"{first} must be a floating-point tensor, got dtype {x0.dtype}")
    acc = acc_dtype(x0.dtype)
    for name, x in inputs[1:]:
        if x is not None and x.dtype != x0.dtype:
            raise ValueError(f"{name} has dtype {x.dtype} but {first} has {x0.dtype}; every input must share "
                             f"one floating-point dtype")
    for name, x in acc_ok:
        if x is not None and x.dtype not in (x0.dtype, acc):
            allowed = str(x0.dtype) if acc == x0.dtype else f"{x0.dtype} or {acc}"
            raise ValueError(f"{name} has dtype {x.dtype} but must be {allowed} ({first} is {x0.dtype})")
    for name, x in [*inputs[1:], *acc_ok]:
        if x is not None and x.device != x0.device:
            raise ValueError(f"{name} is on {x.device} but {first} is on {x0.device}; every tensor must be on "
                             f"one device")
    return x0.dtype


def empty_result(inputs: Sequence[torch.Tensor | None], o_shape: Sequence[int], o_dtype: torch.dtype,
                 initial_state: Sequence[torch.Tensor | None], state_shapes: Sequence[Sequence[int]]):
    """What an op returns when there is no step to run (B == 0 or T == 0): ``(o, final_state)``.

    ``o`` is an empty tensor of ``o_shape``; it depends on every input that requires grad (with zero
    gradients), so that ``backward`` works as it does after a non-empty call. ``final_state`` is a tuple:
    the initial state unchanged (copied, in the accumulation dtype; zeros where it is None)."""
    x0 = inputs[0]
    acc = acc_dtype(x0.dtype)
    o = x0.new_zeros(tuple(o_shape), dtype=o_dtype)
    if torch.is_grad_enabled():
        for x in inputs:
            if x is not None and x.requires_grad:
                o = o + 0 * x.sum().to(o_dtype)
    final = tuple(x0.new_zeros(tuple(shape), dtype=acc) if s is None else s.to(dtype=acc, copy=True)
                  for s, shape in zip(initial_state, state_shapes))
    return o, final


# ------------------------------------------------------------------------------------------------ autocast


def _first_tensor(x) -> torch.Tensor | None:
    """The first tensor in a (nested) tuple / list / dict of arguments, or None."""
    if isinstance(x, torch.Tensor):
        return x
    items = x.values() if isinstance(x, dict) else x if isinstance(x, (tuple, list)) else ()
    for item in items:
        t = _first_tensor(item)
        if t is not None:
            return t
    return None


def _to_float32(x):
    """Float16 / bfloat16 tensors (nested in tuples, lists and dicts) as float32; everything else unchanged."""
    if isinstance(x, torch.Tensor):
        return x.float() if x.dtype in _LOW_PRECISION else x
    if isinstance(x, dict):
        return {k: _to_float32(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_to_float32(v) for v in x)
    return x


def autocast_device(*args) -> str | None:
    """The device type of the first tensor in ``args`` if autocast is on for it, else None."""
    t = _first_tensor(args)
    if t is None:
        return None
    device = t.device.type
    if not torch.amp.is_autocast_available(device) or not torch.is_autocast_enabled(device):
        return None
    return device


def autocast_float32(op: Callable) -> Callable:
    """Makes ``op`` a float32 op under ``torch.autocast``; outside autocast it is called unchanged.

    Under autocast (for the device of the op's first tensor argument) the float16 / bfloat16 tensors among the
    arguments (also inside lists and tuples, e.g. initial states) become float32 copies and the op runs with
    autocast off, so none of its matmuls is re-cast to low precision: the fast-weight state, the intra-chunk
    triangular solve (which has no bfloat16 kernel) and the recurrences accumulate in float32 as they do without
    autocast. Float32 inputs (weights, carried states) go in as they are; float64 ones too (autocast leaves
    float64 alone). The output and the final state come back in float32, as from autocast's own float32 ops
    (``layer_norm``, ``softmax`` on CUDA): the layer's output projection casts the output to low precision
    itself, so returning float32 costs no extra cast there and keeps the accumulation's precision for whatever
    comes in between. The casts are differentiable: gradients reach low-precision inputs in their own dtype.

    A plain, measured choice: the op's batched matmuls are small (C x D by D x C per chunk, D = 16..64), and on
    an AMD EPYC with avx512_bf16 (2 threads) a batch of 32 x 16 by 16 x 32 products in bfloat16 took half the
    float32 time, but 1.4x the float32 time once the casts to and from bfloat16 were counted; float32 also keeps
    the op's results those of the float32 reference (tests/test_autocast.py checks them at float32 tolerance)."""

    @functools.wraps(op)
    def wrapper(*args, **kwargs):
        device = autocast_device(args, kwargs)
        if device is None:
            return op(*args, **kwargs)
        args, kwargs = _to_float32(args), _to_float32(kwargs)
        with torch.autocast(device, enabled=False):
            return op(*args, **kwargs)

    return wrapper


def autocast_off(backward: Callable) -> Callable:
    """For the ``backward`` of an op's ``torch.autograd.Function``: runs it with autocast off.

    ``loss.backward()`` called inside an autocast region would otherwise re-cast the backward's own matmuls
    (the engine runs it with the caller's autocast state); the forward ran in float32, so must the backward."""

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        device = autocast_device(grads)
        if device is None:
            return backward(ctx, *grads)
        with torch.autocast(device, enabled=False):
            return backward(ctx, *grads)

    return wrapper
