"""The token-mixer interface every layer implements, and its registry.

A mixer maps ``x [B, T, d_model]`` to ``y [B, T, d_model]`` and carries a state between calls::

    y, state = layer(x, state=None)

* ``state=None`` is a fresh start. A state is a tuple of tensors whose first dimension is the batch,
  and an all-zero row means "fresh start" for that row (so ``layers.state.reset_state`` can reset
  finished sequences; layers whose natural state is not like that, such as the KV cache, carry a
  validity mask).
* Calling the layer on a whole sequence, one token at a time, or in two halves, carrying the state,
  gives the same outputs.
* Layers are causal: the output at t depends only on inputs up to t (so right-padding never changes
  the outputs at valid positions).
* Optionally ``y, state = layer(x, state, keep=mask)`` (``mask`` [B, T] bool): y is ``[N, d_model]``, the
  kept positions' outputs in row-major order (``y[mask]`` of the full call), with the full call's state. A
  layer takes ``keep`` when it can skip work at the other positions (the fast-weight layers apply W_o, the
  transformer its queries, attention and W_o, at the kept positions only); the block
  (``models.blocks.Block``) indexes the full output of the others.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch.nn as nn

from ..ops._utils import check_positive_int

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Class decorator: makes a mixer available to :func:`build_layer` under ``name``."""

    def deco(cls):
        if name in _REGISTRY:
            raise RuntimeError(f"layer {name!r} registered twice")
        _REGISTRY[name] = cls
        cls.layer_name = name
        return cls

    return deco


def layer_names() -> list[str]:
    return list(_REGISTRY)


def check_probability(name: str, value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def head_dims(d_model, num_heads, head_dim=None) -> tuple[int, int, int]:
    """Validates and returns (d_model, num_heads, head_dim); head_dim defaults to d_model // num_heads."""
    check_positive_int("d_model", d_model)
    check_positive_int("num_heads", num_heads)
    if head_dim is None:
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads}), "
                             f"or pass head_dim")
        head_dim = d_model // num_heads
    check_positive_int("head_dim", head_dim)
    return d_model, num_heads, head_dim


def build_layer(name: str, d_model: int, num_heads: int, **options) -> nn.Module:
    """Builds the mixer registered as ``name`` (see :func:`layer_names`).

    Options a layer does not know raise a ValueError naming them; they never fall back silently."""
    if name not in _REGISTRY:
        raise ValueError(f"layer name must be one of {layer_names()}, got {name!r}")
    cls = _REGISTRY[name]
    params = inspect.signature(cls.__init__).parameters
    known = [p for p in params if p not in ("self", "d_model", "num_heads")]
    for key, value in options.items():
        if key not in known:
            raise ValueError(f"layer {name!r} has no option {key!r} (given {key}={value!r}); "
                             f"its options are {known}")
    return cls(d_model=d_model, num_heads=num_heads, **options)
