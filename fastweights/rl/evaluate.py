"""Evaluation of a trained agent, greedy (or with sampled actions): full games (all lives), raw (unclipped) scores."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from ..train.checkpoint import CheckpointError, load_checkpoint, read_pointer
from ..train.driver import CKPT
from .actors import EnvLoop, build_agent, env_spec, make_env, quiet_numba
from .impala import load_rl_config


def play(agent, envs, episodes: int, reward_clip, seed: int = 12345, greedy: bool = True) -> dict:
    """Plays ``episodes`` episodes spread over ``envs`` (each runs its share to the end, so short
    episodes are not favoured) with the actors' loop. Returns the returns, lengths and (memory env)
    successes, in the order the games ended."""
    n = len(envs)
    quota = [episodes // n + (1 if i < episodes % n else 0) for i in range(n)]
    active = [q > 0 for q in quota]
    agent.eval()
    loop = EnvLoop(envs, agent, reward_clip, seed, greedy=greedy, env_seed=seed)
    games = []
    while any(active):
        action, _ = loop.act()
        for game in loop.step_envs(action, active):
            games.append(game)
            quota[game.env] -= 1
            active[game.env] = quota[game.env] > 0
    out = {"returns": [g.ret for g in games], "lengths": [g.length for g in games]}
    successes = [float(g.success) for g in games if g.success is not None]
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
