"""V-trace against a plain double-sum reference written from Espeholt et al. 2018 (eq. 1), and the
special cases: on-policy without clipping gives n-step returns."""

import math

import pytest
import torch

from fastweights.rl.vtrace import from_importance_weights


def reference_vtrace(log_rhos, discounts, rewards, values, bootstrap, rho_bar, pg_rho_bar):
    """v_s = V(x_s) + sum_{t=s}^{T-1} (prod_{i=s}^{t-1} gamma_i c_i) rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t)),
    element by element with Python floats."""
    T, B = log_rhos.shape
    vs = [[0.0] * B for _ in range(T)]
    adv = [[0.0] * B for _ in range(T)]
    for b in range(B):
        V = [float(values[t, b]) for t in range(T)] + [float(bootstrap[b])]
        ratio = [math.exp(float(log_rhos[t, b])) for t in range(T)]
        rho = [r if rho_bar is None else min(rho_bar, r) for r in ratio]
        c = [min(1.0, r) for r in ratio]
        g = [float(discounts[t, b]) for t in range(T)]
        r = [float(rewards[t, b]) for t in range(T)]
        for s in range(T):
            total = V[s]
            for t in range(s, T):
                weight = 1.0
                for i in range(s, t):
                    weight *= g[i] * c[i]
                total += weight * rho[t] * (r[t] + g[t] * V[t + 1] - V[t])
            vs[s][b] = total
        for s in range(T):
            v_next = vs[s + 1][b] if s + 1 < T else V[T]
            pg_rho = ratio[s] if pg_rho_bar is None else min(pg_rho_bar, ratio[s])
            adv[s][b] = pg_rho * (r[s] + g[s] * v_next - V[s])
    return torch.tensor(vs, dtype=torch.float64), torch.tensor(adv, dtype=torch.float64)


def _inputs(T=7, B=3, seed=0, done_prob=0.2):
    g = torch.Generator().manual_seed(seed)
    log_rhos = torch.randn(T, B, generator=g, dtype=torch.float64)
    discounts = 0.9 * (torch.rand(T, B, generator=g, dtype=torch.float64) > done_prob).double()
    rewards = torch.randn(T, B, generator=g, dtype=torch.float64)
    values = torch.randn(T, B, generator=g, dtype=torch.float64)
    bootstrap = torch.randn(B, generator=g, dtype=torch.float64)
    return log_rhos, discounts, rewards, values, bootstrap


@pytest.mark.parametrize("rho_bar,pg_rho_bar", [(1.0, 1.0), (2.0, 0.5), (None, None), (0.7, None)])
@pytest.mark.parametrize("T,B", [(1, 1), (7, 3), (20, 2)])
def test_matches_double_sum_reference(rho_bar, pg_rho_bar, T, B):
    args = _inputs(T, B, seed=T * 10 + B)
    out = from_importance_weights(*args, clip_rho_threshold=rho_bar, clip_pg_rho_threshold=pg_rho_bar)
    vs_ref, adv_ref = reference_vtrace(*args, rho_bar, pg_rho_bar)
    assert out.vs.shape == (T, B) and out.pg_advantages.shape == (T, B)
    torch.testing.assert_close(out.vs, vs_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.pg_advantages, adv_ref, rtol=1e-10, atol=1e-10)


def test_on_policy_gives_n_step_returns():
    T, B, gamma = 6, 4, 0.95
    _, _, rewards, values, bootstrap = _inputs(T, B, seed=3)
    discounts = torch.full((T, B), gamma, dtype=torch.float64)
    discounts[2, 1] = 0.0  # an episode end in row 1
    out = from_importance_weights(torch.zeros(T, B, dtype=torch.float64), discounts, rewards, values, bootstrap,
                                  clip_rho_threshold=None, clip_pg_rho_threshold=None)
    expected = torch.empty(T, B, dtype=torch.float64)
    ret = bootstrap.clone()
    for t in range(T - 1, -1, -1):
        ret = rewards[t] + discounts[t] * ret
        expected[t] = ret
    torch.testing.assert_close(out.vs, expected)
    # the advantage is then the one-step TD error against the n-step target of the next step
    vs_next = torch.cat([expected[1:], bootstrap[None]])
    torch.testing.assert_close(out.pg_advantages, rewards + discounts * vs_next - values)
    # rhos of 1 are unaffected by clipping at 1
    clipped = from_importance_weights(torch.zeros(T, B, dtype=torch.float64), discounts, rewards, values, bootstrap)
    torch.testing.assert_close(clipped.vs, expected)


def test_zero_rhos_keep_values_and_no_gradient():
    T, B = 5, 2
    log_rhos, discounts, rewards, values, bootstrap = _inputs(T, B, seed=4)
    values.requires_grad_(True)
    out = from_importance_weights(torch.full((T, B), -1e9, dtype=torch.float64), discounts, rewards, values,
                                  bootstrap)
    torch.testing.assert_close(out.vs, values.detach())  # rho = c = 0: nothing is corrected
    assert not out.vs.requires_grad and not out.pg_advantages.requires_grad


def test_bad_shapes_raise():
    log_rhos, discounts, rewards, values, bootstrap = _inputs(4, 2)
    with pytest.raises(ValueError, match="rewards"):
        from_importance_weights(log_rhos, discounts, rewards[:3], values, bootstrap)
    with pytest.raises(ValueError, match="bootstrap_value"):
        from_importance_weights(log_rhos, discounts, rewards, values, bootstrap[:1])
