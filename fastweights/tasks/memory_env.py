"""Cue recall: a small partially observable environment where memory is required (gymnasium API).

An episode is ``delay + 2`` steps. At step 0 the observation shows one of ``num_cues`` cues (one-hot);
for the next ``delay`` steps it is blank; at the last step a query flag is set and the agent must name
the cue: action == cue gives reward +1 (``info["success"] = True``), anything else 0. Actions before
the query do nothing. The query observation is the same whatever the cue was, so an agent without memory
succeeds with probability ``1 / num_cues`` at best, while one that remembers the first observation
succeeds always.

Observation: float32 vector of size ``num_cues + 2``: ``[cue one-hot, delay flag, query flag]``.
Runs at hundreds of thousands of steps per second; no torch import.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class CueRecallEnv(gym.Env):
    """``CueRecallEnv(num_cues=2, delay=10)``; see the module docstring."""

    metadata = {"render_modes": []}

    def __init__(self, num_cues: int = 2, delay: int = 10):
        if not isinstance(num_cues, int) or isinstance(num_cues, bool) or num_cues < 2:
            raise ValueError(f"num_cues must be an int >= 2, got {num_cues!r}")
        if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
            raise ValueError(f"delay must be an int >= 0, got {delay!r}")
        self.num_cues, self.delay = num_cues, delay
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(num_cues + 2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(num_cues)
        self._t = 0
        self._cue = 0

    @property
    def episode_length(self) -> int:
        return self.delay + 2

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.num_cues + 2, dtype=np.float32)
        if self._t == 0:
            obs[self._cue] = 1.0
        elif self._t <= self.delay:
            obs[self.num_cues] = 1.0
        else:
            obs[self.num_cues + 1] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        self._cue = int(self.np_random.integers(self.num_cues))
        return self._obs(), {}

    def step(self, action):
        if not 0 <= int(action) < self.num_cues:
            raise ValueError(f"action must lie in [0, {self.num_cues}), got {action!r}")
        if self._t > self.delay:  # the query step: judge the answer, end the episode
            success = int(action) == self._cue
            self._t += 1
            obs = np.zeros(self.num_cues + 2, dtype=np.float32)
            return obs, float(success), True, False, {"success": success}
        self._t += 1
        return self._obs(), 0.0, False, False, {}
