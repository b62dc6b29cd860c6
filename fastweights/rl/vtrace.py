"""V-trace off-policy targets (Espeholt et al. 2018, "IMPALA", section 4.1), written from the paper's
equations.

For a trajectory of T steps with behaviour policy mu and target policy pi::

    rho_t = min(rho_bar, pi(a_t|x_t) / mu(a_t|x_t))         (clip_rho_threshold)
    c_t   = min(1, pi(a_t|x_t) / mu(a_t|x_t))               (the trace-cutting coefficients, c_bar = 1)
    delta_t = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t))
    v_s = V(x_s) + sum_{t>=s} (prod_{i<t} gamma_i) (prod_{s<=i<t} c_i) delta_t

computed backwards with ``v_s - V(x_s) = delta_s + gamma_s c_s (v_{s+1} - V(x_{s+1}))``, where
``V(x_T)`` is ``bootstrap_value`` and ``v_T = V(x_T)``. The policy-gradient advantage is
``rho_pg_s (r_s + gamma_s v_{s+1} - V(x_s))`` with ``rho_pg_s = min(rho_bar_pg, pi/mu)``
(clip_pg_rho_threshold). ``gamma_t`` is the per-step discount (0 where step t ends an episode).

Shapes: everything ``[T, B]`` except ``bootstrap_value`` ``[B]``. Targets carry no gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class VTraceReturns(NamedTuple):
    vs: torch.Tensor  # [T, B] the V-trace value targets
    pg_advantages: torch.Tensor  # [T, B] the advantages for the policy gradient


def _check(log_rhos, discounts, rewards, values, bootstrap_value):
    if log_rhos.dim() != 2:
        raise ValueError(f"log_rhos must be [T, B], got shape {tuple(log_rhos.shape)}")
    for name, t in (("discounts", discounts), ("rewards", rewards), ("values", values)):
        if t.shape != log_rhos.shape:
            raise ValueError(f"{name} must have the shape of log_rhos {tuple(log_rhos.shape)}, got {tuple(t.shape)}")
    if bootstrap_value.shape != log_rhos.shape[1:]:
        raise ValueError(f"bootstrap_value must be [B] = {tuple(log_rhos.shape[1:])}, "
                         f"got {tuple(bootstrap_value.shape)}")


@torch.no_grad()
def from_importance_weights(log_rhos: torch.Tensor, discounts: torch.Tensor, rewards: torch.Tensor,
                            values: torch.Tensor, bootstrap_value: torch.Tensor,
                            clip_rho_threshold: float | None = 1.0,
                            clip_pg_rho_threshold: float | None = 1.0) -> VTraceReturns:
    """V-trace targets from log importance weights ``log(pi(a_t|x_t) / mu(a_t|x_t))``.

    Args (``[T, B]`` unless noted): log_rhos, discounts (gamma_t, 0 at episode ends), rewards (r_t,
    the reward of step t), values (V(x_t)), bootstrap_value (``[B]``, V(x_T)); clip thresholds rho_bar
    and rho_bar_pg (None: no clipping).
    Returns :class:`VTraceReturns` ``(vs, pg_advantages)``, both ``[T, B]``."""
    _check(log_rhos, discounts, rewards, values, bootstrap_value)
    rhos = torch.exp(log_rhos)
    clipped_rhos = rhos if clip_rho_threshold is None else rhos.clamp(max=clip_rho_threshold)
    cs = rhos.clamp(max=1.0)
    values_next = torch.cat([values[1:], bootstrap_value[None]], dim=0)  # V(x_{t+1})
    deltas = clipped_rhos * (rewards + discounts * values_next - values)

    T = log_rhos.shape[0]
    acc = torch.zeros_like(bootstrap_value)  # v_{s+1} - V(x_{s+1}), zero past the end
    vs_minus_v = torch.empty_like(values)
    for s in range(T - 1, -1, -1):
        acc = deltas[s] + discounts[s] * cs[s] * acc
        vs_minus_v[s] = acc
    vs = vs_minus_v + values

    vs_next = torch.cat([vs[1:], bootstrap_value[None]], dim=0)
    pg_rhos = rhos if clip_pg_rho_threshold is None else rhos.clamp(max=clip_pg_rho_threshold)
    pg_advantages = pg_rhos * (rewards + discounts * vs_next - values)
    return VTraceReturns(vs=vs, pg_advantages=pg_advantages)
