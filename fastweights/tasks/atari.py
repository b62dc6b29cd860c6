"""Atari 2600 games with the usual DQN/IMPALA preprocessing, as one gymnasium environment.

``AtariEnv("Pong")`` wraps ``PongNoFrameskip-v4`` from ale-py (deterministic, no sticky actions, ROMs
shipped with the package) and applies, in this order:

* up to ``noop_max`` (30) no-op actions after every reset, a uniformly random number of them;
* frame skip ``frame_skip`` (4): each action is repeated 4 times, the rewards summed, and the
  observation is the pixel-wise max of the last two raw frames (removes Atari flicker);
* grey scale (the ALE's luminance) resized from 210x160 to 84x84 by area averaging;
* a stack of the last ``frame_stack`` (4) processed frames: observation ``uint8 [4, 84, 84]``.

Rewards are returned raw (the sum over the skipped frames); the learner clips them, and evaluation
reports raw game scores. An episode is a full game (all lives), capped at ``max_episode_frames`` raw
frames (108,000 = 30 minutes of play, as usual), which ends it as truncated.

Two options of the paper's code (torchbeast's ``wrap_deepmind``, after OpenAI baselines), both off by
default here and on in ``fastweights train atari``:

* ``episodic_life``: a step that loses a life (the game goes on) returns ``info["life_lost"] = True``.
  The learner treats it as the end of a learning episode (no bootstrapping across it, a fresh core
  state after it), while returns are still counted over full games. Unlike baselines' wrapper the
  episode is not split: ``terminated`` stays the game's own.
* ``fire_reset``: in games whose action 1 is FIRE (Breakout launches the ball with it), one FIRE step
  (``frame_skip`` frames) after every reset and after every lost life; its reward and frames count.

Needs ``gymnasium`` and ``ale-py`` (``pip install -e '.[atari]'``); importing this module does not.
"""

from __future__ import annotations

import numpy as np

try:
    import gymnasium as gym
except ImportError:  # pragma: no cover
    gym = None

SIZE = 84
FIRE = 1
LIFE_LOST = "life_lost"  # the info key of a step that lost a life, with episodic_life


def have_ale() -> bool:
    """Whether ale-py (and so the Atari games) can be imported."""
    try:
        import ale_py  # noqa: F401
    except ImportError:
        return False
    return True


MISSING_ALE = "Atari games need ale-py and gymnasium, which are not installed: pip install 'fastweights[atari]'"


def require_ale() -> None:
    """A one-line ``ValueError`` naming the extra to install unless gymnasium and ale-py can be imported."""
    if gym is None or not have_ale():
        raise ValueError(MISSING_ALE)


def _area_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Area averaging from n_in to n_out pixels along one axis: output pixel i covers the input span
    ``[i, i+1) * n_in / n_out``. Returns ``(index [n_out, K], weight [n_out, K])`` so that
    ``out[i] = sum_k weight[i, k] * in[index[i, k]]`` (K = the most input pixels one output touches).
    Gathers and element-wise products, no BLAS: a multi-threaded BLAS is slow on busy cores."""
    scale = n_in / n_out
    rows = []
    for i in range(n_out):
        lo, hi = i * scale, (i + 1) * scale
        rows.append([(j, min(hi, j + 1) - max(lo, j)) for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in))
                     if min(hi, j + 1) - max(lo, j) > 1e-9])
    K = max(len(r) for r in rows)
    index = np.zeros((n_out, K), dtype=np.int64)
    weight = np.zeros((n_out, K), dtype=np.float32)
    for i, r in enumerate(rows):
        for k, (j, w) in enumerate(r):
            index[i, k], weight[i, k] = j, w / scale
    return index, weight


def resize_area(frame: np.ndarray, size: int = SIZE, _cache={}) -> np.ndarray:
    """``uint8 [H, W]`` -> ``uint8 [size, size]`` by area averaging (rounded)."""
    H, W = frame.shape
    key = (H, W, size)
    if key not in _cache:
        _cache[key] = (_area_weights(H, size), _area_weights(W, size))
    (ri, rw), (ci, cw) = _cache[key]
    x = (frame[ri].astype(np.float32) * rw[:, :, None]).sum(1)  # [size, W]
    x = (x[:, ci] * cw[None]).sum(2)  # [size, size]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


class AtariEnv(gym.Env if gym is not None else object):
    """One preprocessed Atari game; see the module docstring. ``info["raw_frames"]`` counts emulator frames."""

    metadata = {"render_modes": []}

    def __init__(self, game: str = "Pong", frame_skip: int = 4, frame_stack: int = 4, noop_max: int = 30,
                 max_episode_frames: int = 108_000, episodic_life: bool = False, fire_reset: bool = False):
        require_ale()
        import ale_py

        gym.register_envs(ale_py)
        env_id = f"{game}NoFrameskip-v4"
        try:
            self._env = gym.make(env_id, obs_type="grayscale", max_num_frames_per_episode=max_episode_frames,
                                 disable_env_checker=True)
        except gym.error.Error as e:
            raise ValueError(f"unknown Atari game {game!r} ({env_id}: {e})") from None
        self.game, self.frame_skip, self.frame_stack, self.noop_max = game, frame_skip, frame_stack, noop_max
        self.ale = self._env.unwrapped.ale
        meanings = self._env.unwrapped.get_action_meanings()
        if meanings[0] != "NOOP":
            raise ValueError(f"{env_id}: action 0 is {meanings[0]}, not NOOP")
        self.action_space = self._env.action_space
        self.episodic_life = bool(episodic_life)
        self.fire_reset = bool(fire_reset) and len(meanings) > 1 and meanings[1] == "FIRE"
        self._lives = 0
        self.observation_space = gym.spaces.Box(0, 255, shape=(frame_stack, SIZE, SIZE), dtype=np.uint8)
        self._stack = np.zeros((frame_stack, SIZE, SIZE), dtype=np.uint8)

    def _process(self, frame: np.ndarray) -> np.ndarray:
        return resize_area(frame, SIZE)

    def _push(self, frame: np.ndarray) -> np.ndarray:
        self._stack[:-1] = self._stack[1:]
        self._stack[-1] = self._process(frame)
        return self._stack.copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self._env.reset(seed=None if seed is None else int(seed))
        frames = 0
        for _ in range(int(self.np_random.integers(self.noop_max + 1)) if self.noop_max else 0):
            obs, _, term, trunc, info = self._env.step(0)
            frames += 1
            if term or trunc:
                obs, info = self._env.reset()
        self._stack[:] = 0
        for _ in range(self.frame_stack):
            out = self._push(obs)
        self._lives = self.ale.lives()
        if self.fire_reset:
            out, _, term, trunc, fire_info = self._skip(FIRE)
            frames += fire_info["raw_frames"]
            if term or trunc:  # cannot happen in a fresh game; start over rather than return a finished one
                return self.reset()
        return out, {**info, "raw_frames": frames}

    def step(self, action):
        obs, total, term, trunc, info = self._skip(action)
        lives = self.ale.lives()
        lost = lives < self._lives and not (term or trunc)
        self._lives = lives
        if lost and self.fire_reset:
            obs, r, term, trunc, fire_info = self._skip(FIRE)
            total += r
            info = {**fire_info, "raw_frames": info["raw_frames"] + fire_info["raw_frames"]}
            self._lives = self.ale.lives()
        if lost and self.episodic_life:
            info[LIFE_LOST] = True
        return obs, total, term, trunc, info

    def _skip(self, action):
        """One agent step: ``action`` repeated ``frame_skip`` times (the observation pushed)."""
        total, term, trunc, info = 0.0, False, False, {}
        prev = last = None
        for i in range(self.frame_skip):
            obs, r, term, trunc, info = self._env.step(int(action))
            total += r
            prev, last = last, obs
            if term or trunc:
                break
        frame = last if prev is None else np.maximum(prev, last)  # max over the last two raw frames
        return self._push(frame), total, term, trunc, {**info, "raw_frames": i + 1}

    def close(self):
        self._env.close()
