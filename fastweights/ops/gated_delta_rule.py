"""The gated delta rule (Gated DeltaNet's fast-weight update; Yang, Kautz, Hatamizadeh, ICLR 2025), per head:

    a_t = exp(g_t)                                  (g_t <= 0: a log-decay, so 0 <= a_t <= 1)
    u_t = beta_t (v_t - a_t S_{t-1}^T k_t)          (the "new value", read from the decayed state)
    S_t = a_t S_{t-1} + k_t u_t^T
    o_t = S_t^T q_t                                 (write, then read; no scaling inside the op)

g = 0 is the delta rule (:func:`fastweights.ops.delta_rule`); g = -inf forgets the whole past at that step.
Four paths, all the delta rule's own with the decay switched on (see :mod:`fastweights.ops.delta_rule`):
  * ``reference``: the step loop, autograd through it.
  * ``step``: the same step loop, lean; ``auto`` takes it for a few steps (generation's one-token calls).
  * ``fused``: numba CPU kernels, the step loop with a hand-written backward that recomputes the states from one
    kept every 16 steps (:mod:`._fused`); ``auto``'s choice on the CPU.
  * ``chunk``: the chunkwise algorithm with the decays folded into its matrices, and its hand-written backward
    (the gradient reaches g too). The decays inside a chunk are exponentials of sums of g over the steps they
    span, each at most 1, so the path is stable for any g <= 0.

g > 0 (a growing state) is refused rather than clamped: no layer produces it, and silently changing an input
would hide a bug upstream.
"""

from __future__ import annotations

from ._utils import autocast_float32
from .delta_rule import DEFAULT_CHUNK_SIZE, run_delta_rule


@autocast_float32
def gated_delta_rule(q, k, v, beta, g, *, initial_state=None, output_final_state=False, impl="auto",
                     chunk_size=DEFAULT_CHUNK_SIZE):
    """Delta-rule fast weights with a data-dependent decay.

    Args:
        q, k: ``[B, T, H, Dk]``; v: ``[B, T, H, Dv]``; beta: ``[B, T, H]`` (the learning rates; the layer
            applies sigmoid). Keys should be L2-normalised (the layer does).
        g: ``[B, T, H]``, the log-decays, every one <= 0 (-inf allowed): the state is multiplied by exp(g_t)
            before step t's write.
        initial_state: None or ``S_0`` of shape ``[B, H, Dk, Dv]``.
        output_final_state: also return ``S_T``.
        impl: ``"auto"`` (``"step"`` for at most ``_step.STEP_MAX_T`` steps, else ``"fused"`` on the CPU and
            ``"chunk"`` elsewhere), ``"fused"`` (CPU), ``"chunk"``, ``"step"`` or ``"reference"``.
        chunk_size: chunk length C of the chunkwise path.

    Returns:
        ``(o, S_T)``: o is ``[B, T, H, Dv]`` in the input dtype; S_T (or None) in float32/float64.
    """
    return run_delta_rule("gated_delta_rule", q, k, v, beta, g, initial_state, output_final_state, impl,
                          chunk_size)
