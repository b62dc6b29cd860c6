"""The agent (encoders, cores, heads), the memory environment, the IMPALA loss and the RL config."""

import numpy as np
import pytest
import torch

from fastweights.models.agent import Agent, core_names
from fastweights.rl import RLConfig, RLConfigError, impala_loss
from fastweights.rl.actors import RolloutWorker, build_agent, env_spec, make_env
from fastweights.tasks.memory_env import CueRecallEnv

CORES = ["lstm", "rdn", "delta-rnn", "deltanet", "lt", "ff"]


@pytest.mark.parametrize("core", CORES)
def test_unroll_equals_single_steps_with_resets(core):
    torch.manual_seed(0)
    agent = Agent((5,), 3, encoder="mlp", core=core, features=16, core_dim=16, core_ff=32)
    T, B = 9, 3
    obs, reward = torch.randn(T, B, 5), torch.randn(T, B)
    first = torch.zeros(T, B, dtype=torch.bool)
    first[0, 0] = first[3, 1] = first[4, 1] = first[7, 2] = True
    state0 = agent.initial_state(B)
    state0 = tuple(torch.randn_like(s) for s in state0) if core == "lstm" else state0
    logits, values, final = agent.unroll(obs, reward, first, state0)
    state, step_logits, step_values = state0, [], []
    for t in range(T):
        lg, v, state = agent.step(obs[t], reward[t], first[t], state)
        step_logits.append(lg)
        step_values.append(v)
    torch.testing.assert_close(logits, torch.stack(step_logits), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(values, torch.stack(step_values), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("core", ["rdn", "deltanet", "lstm"])
def test_gradient_flows_through_the_whole_unroll_and_stops_at_resets(core):
    torch.manual_seed(0)
    agent = Agent((4,), 2, encoder="mlp", core=core, features=16, core_dim=16, core_ff=32)
    T, B = 6, 2
    obs = torch.randn(T, B, 4, requires_grad=True)
    first = torch.zeros(T, B, dtype=torch.bool)
    first[3, 1] = True  # row 1 starts a new episode at step 3
    logits, values, _ = agent.unroll(obs, torch.zeros(T, B), first, agent.initial_state(B))
    values[-1].sum().backward()
    g = obs.grad.abs().sum(-1)  # [T, B]
    assert g[0, 0] > 0  # step 5 depends on step 0 through the core's (fast-weight) state
    assert g[0, 1] == 0 and g[2, 1] == 0 and g[3, 1] > 0  # nothing crosses the reset


def test_memoryless_core_has_no_state():
    agent = Agent((4,), 2, encoder="mlp", core="ff", features=8)
    assert agent.initial_state(3) == ()
    assert "ff" in core_names() and "rdn" in core_names() and "transformer" not in core_names()


@pytest.mark.parametrize("encoder", ["deep", "shallow"])
def test_frame_encoders(encoder):
    agent = Agent((4, 84, 84), 6, encoder=encoder, core="rdn")
    obs = torch.randint(0, 256, (2, 3, 4, 84, 84), dtype=torch.uint8)
    logits, values, state = agent.unroll(obs, torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool),
                                         agent.initial_state(3))
    assert logits.shape == (2, 3, 6) and values.shape == (2, 3)
    assert agent.core.proj.in_features == 257 and agent.core.out_dim == 128  # DESIGN.md: 257 -> 128
    with pytest.raises(ValueError, match="84, 84"):
        Agent((4, 64, 64), 6, encoder=encoder)


def test_orthogonal_init_gives_a_near_uniform_policy_and_unit_scale_features():
    torch.manual_seed(0)
    obs = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8)
    plain, ortho = (Agent((4, 84, 84), 4, encoder="shallow", core="lstm", init=i) for i in ("torch", "orthogonal"))
    w = ortho.encoder.fc.weight
    assert torch.allclose(w @ w.T, 2.0 * torch.eye(w.shape[0]), atol=1e-4)  # orthogonal rows, ReLU gain^2
    assert all(float(m.bias.detach().abs().max()) == 0 for m in (ortho.encoder.fc, ortho.policy, ortho.baseline))
    assert float(ortho.policy.weight.detach().norm(dim=1).max()) == pytest.approx(0.01, rel=1e-4)
    # the encoder's features carry the input at a usable scale (PyTorch's default shrinks them ~100x)
    with torch.no_grad():
        assert float(ortho.encoder(obs).std()) > 10 * float(plain.encoder(obs).std())
        logits, _, _ = ortho.unroll(obs[None], torch.zeros(1, 8), torch.zeros(1, 8, dtype=torch.bool),
                                    ortho.initial_state(8))
    assert float(logits.abs().max()) < 0.1  # near-uniform first policy
    with pytest.raises(ValueError, match="init must be one of"):
        Agent((4,), 2, encoder="mlp", core="ff", init="xavier")


def test_frame_scaling_is_the_plain_formula():
    from fastweights.models.agent import _frames

    x = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    y = _frames(x)
    assert torch.equal(y, x.float() / 255.0) and y.is_contiguous(memory_format=torch.channels_last)


def test_learner_loss_and_gradients_do_not_depend_on_the_thread_count():
    """The learner's default thread count changed (results/atari.md): the same batch gives the same loss
    and gradients (up to float rounding) on 1 and 2 threads."""
    torch.manual_seed(0)
    cfg = RLConfig(encoder="deep", core="rdn", batch_size=2, unroll=3, out="unused")
    agent = build_agent(cfg, (4, 84, 84), 6)
    T, B = cfg.unroll, cfg.batch_size
    first = torch.zeros(T + 1, B, dtype=torch.bool)
    first[2, 1] = True
    batch = {"obs": torch.randint(0, 256, (T + 1, B, 4, 84, 84), dtype=torch.uint8),
             "reward": torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, -1.0], [1.0, 0.0]]), "first": first,
             "action": torch.randint(0, 6, (T, B)), "logits": torch.randn(T, B, 6), "state": agent.initial_state(B)}
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            agent.zero_grad(set_to_none=True)
            loss, _ = impala_loss(agent, batch, cfg)
            loss.backward()
            results.append((loss.detach(), [p.grad.clone() for p in agent.parameters()]))
    finally:
        torch.set_num_threads(old)
    (l1, g1), (l2, g2) = results
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_paper_core_sizes():
    fwp = Agent((4, 84, 84), 6, encoder="shallow", core="rdn")
    assert len(fwp.core.blocks) == 2 and fwp.core.blocks[0].mixer.num_heads == 4
    assert fwp.core.blocks[0].mixer.head_dim == 32 and fwp.core.blocks[0].ff[0].out_features == 512
    lstm = Agent((4, 84, 84), 6, encoder="shallow", core="lstm")
    assert lstm.core.out_dim == 256


def test_memory_env_api_and_optimal_policy():
    from gymnasium.utils.env_checker import check_env

    env = CueRecallEnv(num_cues=3, delay=4)
    check_env(env, skip_render_check=True)
    wins = 0
    for ep in range(30):
        obs, _ = env.reset(seed=ep)
        cue = int(np.argmax(obs[:3]))
        assert obs[:3].sum() == 1
        done, steps = False, 0
        while not done:
            obs, r, term, trunc, info = env.step(cue)
            done, steps = term or trunc, steps + 1
            if not done:
                assert obs[:3].sum() == 0  # the cue is shown only once
        wins += int(info["success"])
        assert steps == env.episode_length == 6 and r == float(info["success"])
    assert wins == 30
    with pytest.raises(ValueError, match="delay"):
        CueRecallEnv(delay=-1)


def test_rollout_layout_and_loss():
    cfg = RLConfig(env="memory", cues=2, delay=1, core="rdn", batch_size=4, unroll=7, actors=0, features=8,
                   core_dim=8, out="unused")
    agent = build_agent(cfg, *env_spec(cfg))
    worker = RolloutWorker([make_env(cfg) for _ in range(4)], agent, cfg.unroll, cfg.reward_clip, seed=0)
    b = worker.collect()
    assert b["obs"].shape == (8, 4, 4) and b["action"].shape == (7, 4) and b["logits"].shape == (7, 4, 2)
    assert b["first"][0].all()
    # episodes last delay + 2 = 3 steps: frames 0, 3, 6 are first frames; the reward arrives with them
    assert b["first"][:, 0].tolist() == [True, False, False, True, False, False, True, False]
    assert (b["reward"][~b["first"]] == 0).all()
    assert len(b["episodes"]) == 8 and b["env_frames"] == 28
    loss, parts = impala_loss(agent, b, cfg)
    loss.backward()
    assert np.isfinite(float(loss.detach())) and set(parts) == {"pg_loss", "baseline_loss", "entropy"}
    assert all(p.grad is not None for p in agent.core.parameters())


class _LivesEnv:
    """Cue-recall-shaped observations; reward 1 per step; a life lost every 3rd step, the game over at the 7th."""

    def __init__(self):
        from fastweights.tasks.memory_env import CueRecallEnv

        spaces = CueRecallEnv(num_cues=2, delay=1)
        self.observation_space, self.action_space, self.t = spaces.observation_space, spaces.action_space, 0

    def reset(self, seed=None):
        self.t = 0
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action):
        self.t += 1
        info = {"life_lost": True} if self.t % 3 == 0 and self.t < 7 else {}
        return np.full(self.observation_space.shape, self.t, np.float32), 1.0, self.t == 7, False, info


def test_a_lost_life_ends_a_learning_episode_but_not_the_game():
    cfg = RLConfig(env="memory", cues=2, delay=1, core="lstm", batch_size=2, unroll=8, actors=0, features=8,
                   core_dim=8, out="unused")
    agent = build_agent(cfg, *env_spec(cfg))
    worker = RolloutWorker([_LivesEnv(), _LivesEnv()], agent, cfg.unroll, cfg.reward_clip, seed=0)
    b = worker.collect()
    # observation t is after t steps: lives lost at steps 3 and 6, the game over at 7 (then obs 8 = reset)
    assert b["first"][:, 0].tolist() == [True, False, False, True, False, False, True, True, False]
    assert [e[:2] for e in b["episodes"]] == [(7.0, 7), (7.0, 7)]  # full games: all 7 rewards counted
    from fastweights.rl.evaluate import play

    res = play(agent, [_LivesEnv()], episodes=2, reward_clip=cfg.reward_clip)
    assert res["returns"] == [7.0, 7.0] and res["lengths"] == [7, 7]


@pytest.mark.parametrize("field,value", [("core", "gru"), ("frames", 0), ("lr", -1.0), ("discount", 1.5),
                                         ("env", "mujoco"), ("encoder", "mlp"), ("batch_size", 0),
                                         ("envs_per_actor", 5), ("budget_clock", "moon"), ("init", "xavier"),
                                         ("episodic_life", "yes"), ("fire_reset", 1)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(RLConfigError) as e:
        RLConfig(**{field: value})
    assert e.value.field == field and repr(value) in str(e.value)


def test_config_defaults_are_the_papers():
    cfg = RLConfig()
    assert (cfg.encoder, cfg.batch_size, cfg.unroll, cfg.lr, cfg.rms_alpha, cfg.rms_eps, cfg.grad_clip,
            cfg.entropy_cost, cfg.baseline_cost, cfg.discount, cfg.frame_skip, cfg.features) == \
        ("deep", 32, 50, 6e-4, 0.99, 0.01, 40.0, 0.01, 0.5, 0.99, 4, 256)
    assert RLConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.episodic_life and cfg.fire_reset  # the paper's torchbeast code wraps Atari this way
    assert not RLConfig(env="memory").episodic_life and not RLConfig(env="memory").fire_reset
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("episodic_life", "fire_reset")}
    old_cfg = RLConfig.from_dict(old)  # a run saved before the options existed played without them
    assert not old_cfg.episodic_life and not old_cfg.fire_reset
