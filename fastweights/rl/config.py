"""``RLConfig``: every knob of an IMPALA run, validated when it is constructed.

A bad value raises :class:`RLConfigError` (a ``ValueError``) naming the field and the value; its
``field`` attribute names the field (the command line maps it back to its flag).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, fields

from ..train import config as _train_config
from ..train.common import BUDGET_CLOCKS

ENVS = ("atari", "memory")
LIFE_FIELDS = ("episodic_life", "fire_reset")  # Atari's life handling; added later, absent from older config.json


class RLConfigError(_train_config.TrainConfigError):
    """A bad ``RLConfig`` value; ``field`` names the field (a ``TrainConfigError``, as the shared run start
    raises for ``out``)."""


_int = functools.partial(_train_config._int, error=RLConfigError)
_number = functools.partial(_train_config._number, error=RLConfigError)


@dataclass
class RLConfig:
    """One IMPALA run (Espeholt et al. 2018) with the paper's recipe as defaults (DESIGN.md, Atari).

    Environment: ``env`` ``"atari"`` (``game``, e.g. Pong; NoFrameskip-v4 with ``frame_skip`` 4 and
    max-pooling of the last two frames, 84x84 grey, ``frame_stack`` 4, up to ``noop_max`` 30 no-ops,
    games capped at ``max_episode_frames``; ``episodic_life``: a lost life ends a learning episode, and
    ``fire_reset``: FIRE is pressed after every reset and lost life; None turns both on for Atari, as the
    paper's torchbeast code, see :mod:`fastweights.tasks.atari`) or ``"memory"`` (cue recall, ``cues`` and
    ``delay``: see :mod:`fastweights.tasks.memory_env`).

    Agent: ``encoder`` (``deep`` IMPALA ResNet, ``shallow`` Nature-DQN, ``mlp`` for vectors; None picks
    deep for Atari and mlp for the memory env), ``features`` (encoder output, 256; memory env 64), ``core`` (a layer
    name such as ``rdn``/``lstm``, or ``ff`` for no memory), ``core_dim`` (None: 128 for the FWPs, 256
    for the LSTM and ff), ``core_layers`` (2), ``core_heads`` (4), ``core_ff`` (None: 4 x core_dim, i.e.
    512 at 128), ``init`` (``torch``: PyTorch's default initialisation, as the paper's torchbeast code;
    ``orthogonal``: A2C/PPO's, see :meth:`~fastweights.models.agent.Agent._orthogonal_init`).

    Learning: ``frames`` (environment frames in total, 2M; memory env 200k; for Atari emulator frames,
    i.e. agent steps x frame_skip), ``batch_size`` (32 trajectories; memory env 16) of ``unroll`` (50;
    memory env 20) steps, RMSprop ``lr`` (6e-4; memory env 2e-3; decayed linearly to 0 at ``frames``)
    with ``rms_alpha`` 0.99 and ``rms_eps`` 0.01, ``grad_clip`` 40, ``entropy_cost`` 0.01,
    ``baseline_cost`` 0.5, ``discount`` 0.99, ``reward_clip`` 1 (None: none),
    V-trace thresholds ``clip_rho`` and ``clip_pg_rho`` (1).

    System: ``actors`` processes (0: the learner steps the environments itself, synchronously and
    reproducibly), each running ``envs_per_actor`` environments (None: batch_size / actors);
    ``queue_size`` rollouts between them (shared-memory slots; None: two batches' worth); ``threads``
    (learner's torch threads, None: with actor processes every core for Atari and the cores the actors
    leave over for the memory env, see :func:`~fastweights.rl.impala.default_learner_threads`; torch's
    default with ``actors=0``), ``actor_threads`` (1).

    Bookkeeping: ``seed``, ``out``, ``log_interval`` and ``save_interval`` (learner steps),
    ``time_budget_minutes`` on ``budget_clock`` (as in the supervised loop).
    """

    env: str = "atari"
    game: str = "Pong"
    cues: int = 2
    delay: int = 10
    frame_skip: int | None = None
    frame_stack: int = 4
    noop_max: int = 30
    max_episode_frames: int = 108_000
    episodic_life: bool | None = None
    fire_reset: bool | None = None

    encoder: str | None = None
    features: int | None = None
    core: str = "rdn"
    core_dim: int | None = None
    core_layers: int = 2
    core_heads: int = 4
    core_ff: int | None = None
    init: str = "torch"

    frames: int | None = None
    batch_size: int | None = None
    unroll: int | None = None
    lr: float | None = None
    rms_alpha: float = 0.99
    rms_eps: float = 0.01
    grad_clip: float | None = 40.0
    entropy_cost: float = 0.01
    baseline_cost: float = 0.5
    discount: float = 0.99
    reward_clip: float | None = 1.0
    clip_rho: float | None = 1.0
    clip_pg_rho: float | None = 1.0

    actors: int = 2
    envs_per_actor: int | None = None
    queue_size: int | None = None
    threads: int | None = None
    actor_threads: int = 1

    seed: int = 0
    out: str = "runs/rl"
    log_interval: int = 10
    save_interval: int = 100
    time_budget_minutes: float | None = None
    budget_clock: str = "wall"

    def __post_init__(self):
        from ..models.agent import ENCODERS, INITS, core_names

        if self.env not in ENVS:
            raise RLConfigError("env", f"env must be one of {list(ENVS)}, got {self.env!r}")
        if not isinstance(self.game, str) or not self.game.isidentifier():
            raise RLConfigError("game", f"game must be an Atari game name such as 'Pong', got {self.game!r}")
        _int("cues", self.cues, 2)
        _int("delay", self.delay, 0)
        if self.frame_skip is None:
            self.frame_skip = 4 if self.env == "atari" else 1
        _int("frame_skip", self.frame_skip, 1)
        _int("frame_stack", self.frame_stack, 1)
        _int("noop_max", self.noop_max, 0)
        _int("max_episode_frames", self.max_episode_frames, 1)
        for name in LIFE_FIELDS:
            if getattr(self, name) is None:  # None: on for Atari (the paper's code), off for the memory env
                setattr(self, name, self.env == "atari")
            if not isinstance(getattr(self, name), bool):
                raise RLConfigError(name, f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.encoder is None:
            self.encoder = "deep" if self.env == "atari" else "mlp"
        if self.encoder not in ENCODERS:
            raise RLConfigError("encoder", f"encoder must be one of {list(ENCODERS)}, got {self.encoder!r}")
        if self.init not in INITS:
            raise RLConfigError("init", f"init must be one of {list(INITS)}, got {self.init!r}")
        if (self.encoder == "mlp") != (self.env == "memory"):
            raise RLConfigError("encoder", f"encoder {self.encoder!r} does not fit env {self.env!r} (Atari needs "
                                           f"deep or shallow, the memory env mlp)")
        atari = self.env == "atari"  # None picks the paper's Atari value, or the memory env's smaller one
        if self.features is None:
            self.features = 256 if atari else 64
        if self.batch_size is None:
            self.batch_size = 32 if atari else 16
        if self.unroll is None:
            self.unroll = 50 if atari else 20
        if self.lr is None:
            self.lr = 6e-4 if atari else 2e-3
        if self.frames is None:
            self.frames = 2_000_000 if atari else 200_000
        _int("features", self.features, 1)
        if self.core not in core_names():
            raise RLConfigError("core", f"core must be one of {core_names()}, got {self.core!r}")
        _int("core_dim", self.core_dim, 1, optional=True)
        _int("core_layers", self.core_layers, 1)
        _int("core_heads", self.core_heads, 1)
        _int("core_ff", self.core_ff, 1, optional=True)
        dim = self.core_dim or 128
        if self.core not in ("lstm", "ff") and dim % self.core_heads:
            raise RLConfigError("core_heads", f"core_heads ({self.core_heads}) must divide core_dim ({dim})")

        _int("frames", self.frames, 1)
        _int("batch_size", self.batch_size, 1)
        _int("unroll", self.unroll, 1)
        _number("lr", self.lr, 0.0, low_open=True)
        _number("rms_alpha", self.rms_alpha, 0.0, 1.0, high_open=True)
        _number("rms_eps", self.rms_eps, 0.0, low_open=True)
        _number("grad_clip", self.grad_clip, 0.0, low_open=True, optional=True)
        _number("entropy_cost", self.entropy_cost, 0.0)
        _number("baseline_cost", self.baseline_cost, 0.0)
        _number("discount", self.discount, 0.0, 1.0, high_open=False)
        _number("reward_clip", self.reward_clip, 0.0, low_open=True, optional=True)
        _number("clip_rho", self.clip_rho, 0.0, low_open=True, optional=True)
        _number("clip_pg_rho", self.clip_pg_rho, 0.0, low_open=True, optional=True)

        _int("actors", self.actors, 0)
        _int("envs_per_actor", self.envs_per_actor, 1, optional=True)
        if self.actors > 0:
            if self.envs_per_actor is None:
                if self.batch_size % self.actors:
                    raise RLConfigError("actors", f"actors ({self.actors}) must divide batch_size "
                                                  f"({self.batch_size}), or give envs_per_actor")
                self.envs_per_actor = self.batch_size // self.actors
            if self.batch_size % self.envs_per_actor:
                raise RLConfigError("envs_per_actor", f"envs_per_actor ({self.envs_per_actor}) must divide "
                                                      f"batch_size ({self.batch_size})")
        _int("queue_size", self.queue_size, 1, optional=True)
        _int("threads", self.threads, 1, optional=True)
        _int("actor_threads", self.actor_threads, 1)

        _int("seed", self.seed, 0)
        if not isinstance(self.out, str) or not self.out:
            raise RLConfigError("out", f"out must be a non-empty path, got {self.out!r}")
        _int("log_interval", self.log_interval, 1)
        _int("save_interval", self.save_interval, 1)
        _number("time_budget_minutes", self.time_budget_minutes, 0.0, low_open=True, optional=True)
        if self.budget_clock not in BUDGET_CLOCKS:
            raise RLConfigError("budget_clock", f"budget_clock must be one of {list(BUDGET_CLOCKS)}, "
                                                f"got {self.budget_clock!r}")

    # ------------------------------------------------------------------------------------------------
    @property
    def frames_per_step(self) -> int:
        """Environment frames consumed by one learner step."""
        return self.batch_size * self.unroll * self.frame_skip

    @property
    def total_steps(self) -> int:
        return max(1, math.ceil(self.frames / self.frames_per_step))

    def env_name(self) -> str:
        return self.game if self.env == "atari" else f"memory-c{self.cues}-d{self.delay}"

    def to_dict(self) -> dict:
        return {"kind": "rl", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "RLConfig":
        if not isinstance(data, dict):
            raise ValueError(f"an RL config must be a JSON object, got {type(data).__name__}")
        data = {k: v for k, v in data.items() if k != "kind"}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown RL config field(s): {', '.join(unknown)}")
        for name in LIFE_FIELDS:  # runs saved before these options existed played full games without them
            data.setdefault(name, False)
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"
