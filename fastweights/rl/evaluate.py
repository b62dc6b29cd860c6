"""Evaluation of a trained agent, greedy (or with sampled actions): full games (all lives), raw (unclipped) scores."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from ..tasks.atari import LIFE_LOST
from ..train.checkpoint import CheckpointError, load_checkpoint, read_pointer
from ..train.driver import CKPT
from .actors import build_agent, core_reward, env_spec, make_env, quiet_numba
from .impala import load_rl_config


@torch.no_grad()
def play(agent, envs, episodes: int, reward_clip, seed: int = 12345, greedy: bool = True) -> dict:
    """Plays ``episodes`` episodes spread over ``envs`` (each runs its share to the end, so short
    episodes are not favoured). Returns the returns, lengths and (memory env) successes."""
    n = len(envs)
    quota = [episodes // n + (1 if i < episodes % n else 0) for i in range(n)]
    obs = torch.from_numpy(np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)]))
    reward = torch.zeros(n)
    first = torch.ones(n, dtype=torch.bool)
    state = agent.initial_state(n)
    ep_ret, ep_len = np.zeros(n), np.zeros(n, dtype=np.int64)
    returns, lengths, successes = [], [], []
    gen = torch.Generator().manual_seed(seed)
    active = [q > 0 for q in quota]
    agent.eval()
    while any(active):
        logits, _, state = agent.step(obs, core_reward(reward, first, reward_clip), first, state)
        actions = logits.argmax(-1) if greedy else torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)[:, 0]
        new_obs, reward, first = obs.clone(), torch.zeros(n), torch.zeros(n, dtype=torch.bool)
        for i, env in enumerate(envs):
            if not active[i]:
                continue
            o, r, term, trunc, info = env.step(int(actions[i]))
            ep_ret[i] += r
            ep_len[i] += 1
            reward[i] = r
            if term or trunc:
                returns.append(float(ep_ret[i]))
                lengths.append(int(ep_len[i]))
                if info.get("success") is not None:
                    successes.append(float(info["success"]))
                ep_ret[i], ep_len[i] = 0.0, 0
                quota[i] -= 1
                active[i] = quota[i] > 0
                o, _ = env.reset()
                first[i] = True
            elif info.get(LIFE_LOST):
                first[i] = True  # a fresh core state, as in training; the game goes on
            new_obs[i] = torch.from_numpy(np.asarray(o))
        obs = new_obs
    out = {"returns": returns, "lengths": lengths}
    if successes:
        out["successes"] = successes
    return out


def evaluate_rl_run(run_dir, episodes: int = 30, which: str = "last", envs: int | None = None, seed: int = 12345,
                    threads: int = 1, greedy: bool = True) -> dict:
    """Mean and std of the greedy policy's (``greedy=False``: the sampled policy's) episode returns over
    ``episodes`` full episodes, played by
    ``envs`` environments at once (None: 8 for Atari, 32 for the memory env) on ``threads`` torch threads
    (restored afterwards; one thread avoids spinning thread pools on busy cores)."""
    if not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    quiet_numba()
    run_dir = Path(run_dir)
    cfg = load_rl_config(run_dir)
    if which == "best" and read_pointer(run_dir / CKPT, "best") is None:
        which = "last"  # RL runs keep only the last checkpoint
    obs_shape, num_actions = env_spec(cfg)
    agent = build_agent(cfg, obs_shape, num_actions)
    loaded = load_checkpoint(run_dir / CKPT, agent, which)
    if loaded is None:
        raise CheckpointError(f"{run_dir}: no {which} checkpoint yet (no {CKPT}/{which}.json)")
    ptr, st = loaded
    envs = envs or (8 if cfg.env == "atari" else 32)
    env_list = [make_env(cfg) for _ in range(min(envs, episodes))]
    t0 = time.time()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        res = play(agent, env_list, episodes, cfg.reward_clip, seed=seed, greedy=greedy)
    finally:
        torch.set_num_threads(old_threads)
        for e in env_list:
            e.close()
    r = np.asarray(res["returns"], dtype=np.float64)
    out = {"run_dir": str(run_dir), "env": cfg.env_name(), "core": cfg.core, "encoder": cfg.encoder,
           "checkpoint": which, "policy": "greedy" if greedy else "sampled", "step": ptr["step"],
           "frames": int(st.get("frames", 0)), "episodes": len(r),
           "return_mean": float(r.mean()), "return_std": float(r.std(ddof=1)) if len(r) > 1 else 0.0,
           "return_min": float(r.min()), "return_max": float(r.max()),
           "episode_length_mean": float(np.mean(res["lengths"])), "seconds": round(time.time() - t0, 2),
           "returns": res["returns"]}
    if "successes" in res:
        out["success"] = float(np.mean(res["successes"]))
    if not all(math.isfinite(x) for x in res["returns"]):
        raise ValueError("non-finite episode return")
    return out
