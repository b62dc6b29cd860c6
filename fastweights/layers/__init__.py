"""Token-mixing layers: every fast weight programmer of the paper, plus softmax attention and the LSTM.

``build_layer(name, d_model=..., num_heads=..., **options)``; ``layer_names()`` lists the names.
Each layer is called as ``layer(x, state=None) -> (y, new_state)`` with x ``[B, T, d_model]``.
"""

from . import baselines, fwp  # noqa: F401  (registers the layers)
from . import srwm  # noqa: F401  (registers srwm)
from . import hybrid  # noqa: F401  (registers hqlt)
from . import gated  # noqa: F401  (registers gated-deltanet)
from .base import build_layer, layer_names, register
from .state import detach_state, map_state, reset_state

__all__ = ["build_layer", "layer_names", "register", "detach_state", "map_state", "reset_state"]
