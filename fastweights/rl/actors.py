"""Actors: processes that step environments with a copy of the agent and send rollouts to the learner.

A rollout of ``n`` environments and ``T`` steps (the IMPALA layout, one overlapping frame)::

    obs       [T+1, n, ...]   observations; obs[T] is the next rollout's obs[0] (for the bootstrap value)
    reward    [T+1, n]        raw reward of the step that led to obs[t] (at an episode's first frame: the
                              previous episode's last reward; the core sees 0 there)
    first     [T+1, n] bool   obs[t] is the first observation of an episode (the core state is reset)
    action    [T, n]          the action taken on obs[t]
    logits    [T, n, A]       the behaviour policy's logits at obs[t]
    state                     the core state before step 0 (before its reset), batch first
    episodes                  [Episode(return, length, success or None, env)] of the games that ended

:class:`ActorPool` runs ``actors`` processes (spawned, one torch thread each) that read the weights from
a shared-memory copy of the agent, which the learner refreshes after every update, and hand rollouts to
the learner through a fixed set of shared-memory slots: an actor takes a free slot (waiting while all are
in use: the bound on how far the actors run ahead), copies the observations into it (23 MB per Atari
rollout of 16 environments) and puts the slot's number with the small arrays on a queue; the learner
copies the observations out when it stacks a batch and frees the slot. The observations thus cross once
instead of being pickled through a pipe (which cost the learner ~0.1 s per batch, 3-5% of a
shallow-encoder update). An actor that raises or dies makes :meth:`ActorPool.next_batch` raise
:class:`ActorError` naming the actor, its exit code and its last error, within about a second; the
learner never waits on a dead actor.

Fault injection for the tests: ``FASTWEIGHTS_FAULT="actor-crash:N"`` makes actor 0 raise after its N-th
rollout, ``"actor-kill:N"`` makes it SIGKILL itself then.
"""

from __future__ import annotations

import os
import queue as queue_mod
import signal
import time
import traceback
from typing import NamedTuple

import numpy as np
import torch

from ..layers.state import map_state
from ..tasks.atari import LIFE_LOST
from .config import RLConfig

FAULT_ENV = "FASTWEIGHTS_FAULT"


def quiet_numba() -> None:
    """Makes the fused kernels (numba) use the ``workqueue`` threading layer in this process, unless one
    was chosen already. With the default OpenMP layer, idle numba threads spin; when actors and the
    learner share two busy cores that slowed every following torch op ~1000x (a 16x32 layer norm took
    12 ms instead of 4 us). Has no effect once a parallel kernel ran in this process."""
    import numba

    if os.environ.get("NUMBA_THREADING_LAYER") is None and numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = "workqueue"


def keep_freed_memory() -> bool:
    """Makes glibc's ``malloc`` keep freed memory for reuse instead of handing it back to the kernel in
    this process (mmap threshold 1 GiB, trim threshold 2 GiB). Returns whether it took effect (False on a
    C library without ``mallopt``).

    The learner's activations are tensors of 0.2-0.7 GB (1,632 frames of 16 x 84 x 84 floats); by
    default glibc serves anything over 32 MB with a fresh ``mmap`` and unmaps it when freed, so every
    such tensor page-faults all its pages in again on every update. On the project's VM a page fault
    costs ~4 us: an elementwise op on a 184 MB tensor took 6x longer than on reused memory, a quarter of
    a deep-encoder run's CPU time was ``sys``; keeping the memory took that run from 69 to 149 env
    steps/s in the measurement that led to this change (a loaded machine; results/atari.md has the idle
    figures). The memory kept is at most the process's peak, which it needs again at the next update
    anyway. Atari runs call it (in the learner and the actors); the memory environment's tensors are
    small."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    ok = mallopt(M_MMAP_THRESHOLD, 1 << 30)
    ok &= mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)
    return bool(ok)


class ActorError(RuntimeError):
    """An actor process failed; the message names it, its exit code and its last error."""


def make_env(cfg: RLConfig):
    """One environment of ``cfg`` (not yet reset)."""
    if cfg.env == "memory":
        from ..tasks.memory_env import CueRecallEnv

        return CueRecallEnv(num_cues=cfg.cues, delay=cfg.delay)
    from ..tasks.atari import AtariEnv

    return AtariEnv(cfg.game, frame_skip=cfg.frame_skip, frame_stack=cfg.frame_stack, noop_max=cfg.noop_max,
                    max_episode_frames=cfg.max_episode_frames, episodic_life=cfg.episodic_life,
                    fire_reset=cfg.fire_reset)


def env_spec(cfg: RLConfig) -> tuple[tuple, int]:
    """``(observation shape, number of actions)`` of ``cfg``'s environment."""
    env = make_env(cfg)
    try:
        return tuple(env.observation_space.shape), int(env.action_space.n)
    finally:
        env.close()


def build_agent(cfg: RLConfig, obs_shape, num_actions):
    from ..models.agent import Agent

    return Agent(obs_shape, num_actions, encoder=cfg.encoder, core=cfg.core, features=cfg.features,
                 core_dim=cfg.core_dim, core_layers=cfg.core_layers, core_heads=cfg.core_heads, core_ff=cfg.core_ff,
                 init=cfg.init, layer_options=cfg.layer_options)


def clip_reward(reward: torch.Tensor, clip: float | None) -> torch.Tensor:
    return reward if clip is None else reward.clamp(-clip, clip)


def core_reward(reward: torch.Tensor, first: torch.Tensor, clip: float | None) -> torch.Tensor:
    """The reward the core sees at each observation: clipped, and 0 at an episode's first frame (whose
    stored reward is the previous episode's last)."""
    return clip_reward(reward, clip) * (~first).to(reward.dtype)


class Episode(NamedTuple):
    """A finished full game: its raw (unclipped) return over all its lives, its length in agent steps,
    the memory environment's success (None elsewhere) and the index of the environment that played it."""
    ret: float
    length: int
    success: float | None
    env: int


class EnvLoop:
    """Steps ``envs`` with ``agent``: the one loop of the actors and of evaluation.

    :meth:`act` runs the agent one step on every row (the core state of rows whose observation is a
    first one is reset there) and chooses the actions: the most likely (``greedy``) or drawn from the
    policy with a generator seeded by ``seed``. :meth:`step_envs` steps the environments, resets those
    whose game ended and marks the next observation as first at a game's end or at a lost life (a fresh
    core state; the game and its return go on). Environment i is reset with seed ``env_seed + i`` (None:
    ``seed * 1000``)."""

    def __init__(self, envs, agent, reward_clip: float | None, seed: int, greedy: bool = False,
                 env_seed: int | None = None):
        self.envs, self.agent, self.reward_clip, self.greedy = envs, agent, reward_clip, greedy
        n = len(envs)
        env_seed = seed * 1000 if env_seed is None else env_seed
        self.gen = torch.Generator().manual_seed(seed)
        self.obs = torch.from_numpy(np.stack([e.reset(seed=env_seed + i)[0] for i, e in enumerate(envs)]))
        self.reward = torch.zeros(n)
        self.first = torch.ones(n, dtype=torch.bool)
        self.state = agent.initial_state(n)
        self.ep_return = np.zeros(n)
        self.ep_length = np.zeros(n, dtype=np.int64)
        self.env_frames = 0

    @torch.no_grad()
    def act(self):
        """The actions ``[n]`` and the policy's logits ``[n, A]`` on the current observations."""
        logits, _, self.state = self.agent.step(self.obs, core_reward(self.reward, self.first, self.reward_clip),
                                                self.first, self.state)
        if self.greedy:
            action = logits.argmax(-1)
        else:
            action = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=self.gen).squeeze(-1)
        return action, logits

    def step_envs(self, action, active=None) -> list[Episode]:
        """Steps every environment (only those ``active`` marks, when given: the others keep their
        observation, with reward 0 and not first); resets the finished ones. Returns their games."""
        n = len(self.envs)
        obs, reward, first, episodes = [], torch.zeros(n), torch.zeros(n, dtype=torch.bool), []
        for i, (env, a) in enumerate(zip(self.envs, action.tolist())):
            if active is not None and not active[i]:
                obs.append(self.obs[i].numpy())
                continue
            o, r, term, trunc, info = env.step(a)
            self.env_frames += int(info.get("raw_frames", 1))
            self.ep_return[i] += r
            self.ep_length[i] += 1
            if term or trunc:
                episodes.append(Episode(float(self.ep_return[i]), int(self.ep_length[i]), info.get("success"), i))
                self.ep_return[i], self.ep_length[i] = 0.0, 0
                o, info = env.reset()
                self.env_frames += int(info.get("raw_frames", 0))
                first[i] = True
            elif info.get(LIFE_LOST):  # AtariEnv with episodic_life
                first[i] = True  # a learning episode ends; the game (and its return) goes on
            reward[i] = r
            obs.append(o)
        self.obs, self.reward, self.first = torch.from_numpy(np.stack(obs)), reward, first
        return episodes


class RolloutWorker(EnvLoop):
    """Steps ``envs`` with ``agent`` (sampling actions) and returns rollouts of ``unroll`` steps."""

    def __init__(self, envs, agent, unroll: int, reward_clip: float | None, seed: int, greedy: bool = False):
        super().__init__(envs, agent, reward_clip, seed, greedy)
        self.unroll = unroll

    def collect(self) -> dict:
        T, n = self.unroll, len(self.envs)
        obs = torch.empty(T + 1, *self.obs.shape, dtype=self.obs.dtype)
        reward, first = torch.empty(T + 1, n), torch.empty(T + 1, n, dtype=torch.bool)
        actions = torch.empty(T, n, dtype=torch.long)
        logits_buf = None
        state0 = map_state(self.state, torch.clone)
        episodes = []
        for t in range(T):
            obs[t], reward[t], first[t] = self.obs, self.reward, self.first
            action, logits = self.act()
            if logits_buf is None:
                logits_buf = torch.empty(T, n, logits.shape[-1])
            actions[t], logits_buf[t] = action, logits
            episodes += self.step_envs(action)
        obs[T], reward[T], first[T] = self.obs, self.reward, self.first
        return {"obs": obs, "reward": reward, "first": first, "action": actions, "logits": logits_buf,
                "state": state0, "episodes": episodes, "env_frames": self._take_frames()}

    def _take_frames(self) -> int:
        frames, self.env_frames = self.env_frames, 0
        return frames


def stack_rollouts(rollouts: list[dict]) -> dict:
    """Concatenates rollouts along the batch (dim 1 of the time-major tensors, dim 0 of the state)."""
    out = {k: torch.cat([r[k] for r in rollouts], dim=1) for k in ("obs", "reward", "first", "action", "logits")}
    states = [r["state"] for r in rollouts]
    out["state"] = _cat_states(states)
    out["episodes"] = [e for r in rollouts for e in r["episodes"]]
    out["env_frames"] = sum(r["env_frames"] for r in rollouts)
    return out


def _cat_states(states):
    first = states[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(states, dim=0)
    if isinstance(first, (tuple, list)):
        return type(first)(_cat_states([s[i] for s in states]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: _cat_states([s[k] for s in states]) for k in first}
    return first


def _fault(actor_id: int, rollouts: int) -> None:
    spec = os.environ.get(FAULT_ENV, "")
    kind, _, n = spec.partition(":")
    if actor_id != 0 or not n.strip().isdigit() or int(n) != rollouts:
        return
    if kind == "actor-crash":
        raise RuntimeError(f"injected fault: actor-crash after rollout {rollouts}")
    if kind == "actor-kill":
        os.kill(os.getpid(), signal.SIGKILL)


_SMALL = ("reward", "first", "action", "logits")


def _to_numpy(rollout: dict) -> dict:
    """Tensors -> NumPy arrays for the queue (pickled through a pipe: no per-rollout shared-memory file
    handles); the observations travel in a slot instead (see the module docstring)."""
    out = {k: v for k, v in rollout.items() if k != "obs"}
    for k in _SMALL:
        out[k] = rollout[k].numpy()
    out["state"] = map_state(rollout["state"], lambda t: t.numpy())
    return out


def _from_numpy(rollout: dict) -> dict:
    out = dict(rollout)
    for k in _SMALL:
        out[k] = torch.from_numpy(rollout[k])
    out["state"] = _map_arrays(rollout["state"])
    return out


def _obs_space(cfg: RLConfig) -> tuple[tuple, torch.dtype]:
    env = make_env(cfg)
    try:
        space = env.observation_space
        return tuple(space.shape), torch.from_numpy(np.empty(0, dtype=space.dtype)).dtype
    finally:
        env.close()


def _take_slot(free, stop) -> int | None:
    """A free slot's number, or None once ``stop`` is set."""
    while not stop.is_set():
        try:
            return free.get(timeout=0.2)
        except queue_mod.Empty:
            continue
    return None


def _map_arrays(state):
    if isinstance(state, np.ndarray):
        return torch.from_numpy(state)
    if isinstance(state, (tuple, list)):
        return type(state)(_map_arrays(s) for s in state)
    if isinstance(state, dict):
        return {k: _map_arrays(v) for k, v in state.items()}
    return state


def actor_main(actor_id: int, cfg_dict: dict, shared_agent, slots, free, rollouts, errors, stop) -> None:
    """The body of one actor process: ``slots`` is the shared observation buffer ``[S, T+1, n, ...]``,
    ``free`` the queue of free slot numbers, ``rollouts`` the queue to the learner."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the learner decides when to stop
    rollouts.cancel_join_thread()
    try:
        cfg = RLConfig.from_dict(cfg_dict)
        quiet_numba()
        if cfg.env == "atari":
            keep_freed_memory()
        torch.set_num_threads(cfg.actor_threads)
        seed = cfg.seed * 10007 + 101 * (actor_id + 1)
        torch.manual_seed(seed)
        envs = [make_env(cfg) for _ in range(cfg.envs_per_actor)]
        worker = RolloutWorker(envs, shared_agent, cfg.unroll, cfg.reward_clip, seed)
        count = 0
        while not stop.is_set():
            rollout = worker.collect()
            count += 1
            _fault(actor_id, count)
            slot = _take_slot(free, stop)
            if slot is None:
                break
            obs = rollout["obs"]
            if obs.shape != slots.shape[1:] or obs.dtype != slots.dtype:
                raise RuntimeError(f"rollout observations {tuple(obs.shape)} {obs.dtype} do not fit the slots "
                                   f"{tuple(slots.shape[1:])} {slots.dtype}")
            slots[slot].copy_(obs)
            item = {**_to_numpy(rollout), "slot": slot}
            while not stop.is_set():
                try:
                    rollouts.put(item, timeout=0.2)
                    break
                except queue_mod.Full:
                    continue
    except Exception as e:  # report, then exit non-zero: the learner raises ActorError
        errors.put((actor_id, f"{type(e).__name__}: {e}", traceback.format_exc()))
        errors.close()
        errors.join_thread()
        os._exit(1)


class ActorPool:
    """``actors`` processes feeding ``queue_size`` shared-memory slots (None: two batches' worth);
    :meth:`next_batch` gathers ``batch_size`` trajectories."""

    def __init__(self, cfg: RLConfig, shared_agent):
        import torch.multiprocessing as mp

        self.cfg = cfg
        ctx = mp.get_context("spawn")
        per_batch = cfg.batch_size // cfg.envs_per_actor
        self.per_batch = per_batch
        n_slots = max(cfg.queue_size or max(2, 2 * per_batch), per_batch)
        obs_shape, obs_dtype = _obs_space(cfg)
        self.slots = torch.empty(n_slots, cfg.unroll + 1, cfg.envs_per_actor, *obs_shape,
                                 dtype=obs_dtype).share_memory_()
        self.free = ctx.Queue()
        for i in range(n_slots):
            self.free.put(i)
        self.queue = ctx.Queue(maxsize=n_slots)
        self.errors = ctx.Queue()
        self.stop = ctx.Event()
        self.procs = []
        for i in range(cfg.actors):
            p = ctx.Process(target=actor_main, args=(i, cfg.to_dict(), shared_agent, self.slots, self.free,
                                                     self.queue, self.errors, self.stop),
                            name=f"fastweights-actor-{i}", daemon=True)
            p.start()
            self.procs.append(p)

    def _check(self) -> None:
        for i, p in enumerate(self.procs):
            if p.exitcode is not None and not self.stop.is_set():
                detail = ""
                try:
                    while True:
                        aid, msg, tb = self.errors.get_nowait()
                        if aid == i:
                            detail = f"; its last error: {msg}"
                except queue_mod.Empty:
                    pass
                how = (f"was killed by signal {-p.exitcode}" if p.exitcode < 0 else f"exited with code {p.exitcode}")
                raise ActorError(f"actor {i} (pid {p.pid}) {how}{detail}; stopping the run")

    def next_batch(self, timeout_s: float | None = None) -> dict:
        """The next ``batch_size`` trajectories, stacked; raises :class:`ActorError` if an actor died."""
        items, start = [], time.time()
        while len(items) < self.per_batch:
            self._check()
            try:
                item = _from_numpy(self.queue.get(timeout=0.5))
            except queue_mod.Empty:
                if timeout_s is not None and time.time() - start > timeout_s:
                    raise ActorError(f"no rollout from the actors in {timeout_s:g} s") from None
                continue
            item["obs"] = self.slots[item["slot"]]
            items.append(item)
        batch = stack_rollouts(items)  # copies the observations out of the slots
        for item in items:
            self.free.put(item["slot"])
        return batch

    def close(self) -> None:
        """Stops and reaps every actor (terminate, then kill); never blocks for long."""
        self.stop.set()
        deadline = time.time() + 5.0
        try:  # drain, so that actors blocked on a full queue see the stop event
            while time.time() < deadline:
                self.queue.get_nowait()
        except (queue_mod.Empty, OSError, ValueError):
            pass
        for p in self.procs:
            p.join(timeout=max(0.1, deadline - time.time()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=2.0)
            if p.is_alive():
                p.kill()
                p.join(timeout=2.0)
        for q in (self.queue, self.free):
            q.cancel_join_thread()
            q.close()
        self.errors.close()
