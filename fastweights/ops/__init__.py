"""Stateless fast-weight recurrences. Each op has a step-loop reference and fast paths (``impl=``).

Layout: q, k, v ``[B, T, H, D]``, beta ``[B, T, H]``, state matrices ``[B, H, D_k, D_v]``; write then
read; every op takes ``initial_state=None, output_final_state=False`` and returns ``(o, final_state)``.
Every tensor input shares one floating-point dtype and one device; B == 0 or T == 0 returns an empty output
(and the initial state as the final state). ``registry.OPS`` holds one spec per op (impls, state names, an
input maker), which the generic tests and ``fastweights bench ops`` iterate over.
"""

from . import feature_maps
from .delta_delta import delta_delta
from .delta_lstm import delta_lstm
from .delta_mlp import delta_mlp
from .delta_rnn import delta_rnn
from .delta_rule import delta_rule
from .gated_delta_rule import gated_delta_rule
from .linear_attention import linear_attention
from .rdn import recurrent_delta_rule
from .srwm import srwm

__all__ = ["delta_delta", "delta_lstm", "delta_mlp", "delta_rnn", "delta_rule", "feature_maps", "gated_delta_rule",
           "linear_attention", "recurrent_delta_rule", "srwm"]
