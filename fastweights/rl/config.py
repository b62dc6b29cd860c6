"""``RLConfig``: every knob of an IMPALA run, validated when it is constructed.

A bad value raises :class:`RLConfigError` (a ``ValueError``) naming the field and the value; its
``field`` attribute names the field (the command line maps it back to its flag).
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass

from ..train.options import NONE_WORDS, ConfigError, RunConfig, option, redeclare

ENVS = ("atari", "memory")
LIFE_FIELDS = ("episodic_life", "fire_reset")  # Atari's life handling; added later, absent from older config.json
RLConfigError = ConfigError
AUTO = ("none", "auto")


def _core_names():
    from ..models.agent import core_names

    return core_names()


def _encoders():
    from ..models.agent import ENCODERS

    return ENCODERS


def _inits():
    from ..models.agent import INITS

    return INITS


@dataclass
class RLConfig(RunConfig):
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

    kind: typing.ClassVar[str] = "rl"
    command_field: typing.ClassVar[str] = "env"

    env: str = option("atari", "environment", choices=ENVS, cli=False)
    game: str = option("Pong", "Atari game, e.g. Pong, Breakout, Boxing", commands=("atari",))
    cues: int = option(2, "number of cues to tell apart", low=2, high=10_000, commands=("memory",))
    delay: int = option(10, "blank steps between cue and query", low=0, high=100_000, commands=("memory",))
    frame_skip: int | None = option(None, "frames per action, max-pooled over the last two (default 4)", low=1,
                                    high=1000, commands=("atari",), none_words=AUTO)
    frame_stack: int = option(4, "frames stacked into one observation", low=1, high=64, commands=("atari",))
    noop_max: int = option(30, "at most this many no-ops after a reset", low=0, high=100_000, commands=("atari",))
    max_episode_frames: int = option(108_000, "cap of one game in emulator frames", low=1, high=10**9,
                                     commands=("atari",))
    episodic_life: bool | None = option(None, "on (default, as the paper's code): a lost life ends a learning "
                                              "episode (returns still count full games); off", commands=("atari",),
                                        none_words=AUTO)
    fire_reset: bool | None = option(None, "on (default, as the paper's code): press FIRE after every reset and "
                                           "lost life, in games that have it; off", commands=("atari",),
                                     none_words=AUTO)

    encoder: str | None = option(None, "deep (IMPALA ResNet, default) or shallow (Nature-DQN)", choices=_encoders,
                                 commands=("atari",), none_words=AUTO)
    features: int | None = option(None, "encoder output width (default 256; memory env 64)", low=1, high=65536,
                                  none_words=AUTO)
    core: str = option("rdn", "lstm, rdn, delta-rnn, deltanet, lt, ... or ff (no memory)", choices=_core_names)
    core_dim: int | None = option(None, "core width (default 128 for FWPs, 256 for lstm/ff)", low=1, high=65536,
                                  none_words=AUTO)
    core_layers: int = option(2, "FWP blocks", low=1, high=1024)
    core_heads: int = option(4, "FWP heads", low=1, high=4096)
    core_ff: int | None = option(None, "FWP feedforward width (default 4 x core dim)", low=1, high=2**20,
                                 none_words=AUTO)
    init: str = option("torch", "weight initialisation: torch (PyTorch's default, as the paper's code) or "
                                "orthogonal (A2C/PPO's; policy head gain 0.01)", choices=_inits)

    frames: int | None = option(None, "environment frames in total, e.g. 2e6 (Atari: emulator frames; default 2M, "
                                      "memory env 200k)", low=1, high=10**13, resumable=True, none_words=AUTO)
    batch_size: int | None = option(None, "trajectories per update (default 32; memory env 16)", low=1, high=2**16,
                                    none_words=AUTO)
    unroll: int | None = option(None, "steps per trajectory (default 50; memory env 20)", low=1, high=100_000,
                                none_words=AUTO)
    lr: float | None = option(None, "RMSprop learning rate, decayed linearly to 0 (default 6e-4; memory env 2e-3)",
                              low=0, low_open=True, high=10, none_words=AUTO)
    rms_alpha: float = option(0.99, "RMSprop smoothing", low=0, high=1, high_open=True)
    rms_eps: float = option(0.01, "RMSprop epsilon", low=0, low_open=True, high=1e3)
    grad_clip: float | None = option(40.0, "max gradient norm (0, none or off: no clipping)", low=0, high=1e9,
                                     words=(("none", 0.0), ("off", 0.0)))
    entropy_cost: float = option(0.01, "entropy bonus weight", low=0, high=1e6)
    baseline_cost: float = option(0.5, "baseline loss weight", low=0, high=1e6)
    discount: float = option(0.99, "discount gamma", low=0, high=1)
    reward_clip: float | None = option(1.0, "clip rewards to +-this, or none", low=0, low_open=True, high=1e9,
                                       none_words=NONE_WORDS)
    clip_rho: float | None = option(1.0, "V-trace importance-weight threshold rho-bar, or none", low=0,
                                    low_open=True, high=1e9, none_words=NONE_WORDS)
    clip_pg_rho: float | None = option(1.0, "V-trace policy-gradient threshold, or none", low=0, low_open=True,
                                       high=1e9, none_words=NONE_WORDS)

    actors: int = option(2, "actor processes; 0 = step the environments in the learner", low=0, high=256,
                         resumable=True)
    envs_per_actor: int | None = option(None, "environments per actor (default batch/actors)", low=1, high=4096,
                                        resumable=True, none_words=AUTO)
    queue_size: int | None = option(None, "rollouts the actors may have ready (shared-memory slots; default two "
                                          "batches)", low=1, high=4096, resumable=True, none_words=AUTO)
    threads: int | None = redeclare(RunConfig, "threads", None, "learner torch threads (default: Atari every core, "
                                                                "memory env the cores the actors leave, at least 1)",
                                    resumable=True)
    actor_threads: int = option(1, "torch threads per actor", low=1, high=1024, resumable=True)
    save_interval: int | None = redeclare(RunConfig, "save_interval", 100, "learner steps between checkpoints")

    def resolve(self) -> None:
        atari = self.env == "atari"  # None picks the paper's Atari value, or the memory env's smaller one
        defaults = dict(frame_skip=4 if atari else 1, encoder="deep" if atari else "mlp", features=256 if atari else 64,
                        batch_size=32 if atari else 16, unroll=50 if atari else 20, lr=6e-4 if atari else 2e-3,
                        frames=2_000_000 if atari else 200_000, episodic_life=atari, fire_reset=atari)
        for name, value in defaults.items():  # the life fields: on for Atari (the paper's code), off for memory
            if getattr(self, name) is None:
                setattr(self, name, value)

    def check(self) -> None:
        if not self.game.isidentifier():
            raise ConfigError("game", f"game must be an Atari game name such as 'Pong', got {self.game!r}")
        if (self.encoder == "mlp") != (self.env == "memory"):
            raise ConfigError("encoder", f"encoder {self.encoder!r} does not fit env {self.env!r} (Atari needs "
                                         f"deep or shallow, the memory env mlp)")
        dim = self.core_dim or 128
        if self.core not in ("lstm", "ff") and dim % self.core_heads:
            raise ConfigError("core_heads", f"core_heads ({self.core_heads}) must divide core_dim ({dim})")
        if self.layer_options:
            self._check_layer_options(dim)
        if self.actors > 0:
            if self.envs_per_actor is None:
                if self.batch_size % self.actors:
                    raise ConfigError("actors", f"actors ({self.actors}) must divide batch_size "
                                                f"({self.batch_size}), or give envs_per_actor")
                self.envs_per_actor = self.batch_size // self.actors
            if self.batch_size % self.envs_per_actor:
                raise ConfigError("envs_per_actor", f"envs_per_actor ({self.envs_per_actor}) must divide "
                                                    f"batch_size ({self.batch_size})")
        elif self.envs_per_actor is not None:
            raise ConfigError("envs_per_actor", f"envs_per_actor ({self.envs_per_actor}) needs actor processes; "
                                                f"with actors 0 the learner steps batch_size environments itself")

    def preflight(self, resume: bool) -> None:
        if self.env == "atari":
            from ..tasks.atari import require_ale

            try:
                require_ale()
            except ValueError as e:
                raise ConfigError("env", str(e)) from None

    def _check_layer_options(self, dim: int) -> None:
        """The core's layer options, checked by building one core layer on the meta device."""
        import torch

        from ..layers import build_layer

        if self.core == "ff":
            raise ConfigError("layer_options", f"the ff core has no layer to take options {self.layer_options!r}")
        heads = 1 if self.core == "lstm" else self.core_heads
        try:
            with torch.device("meta"):
                build_layer(self.core, d_model=self.core_dim or (256 if self.core == "lstm" else dim),
                            num_heads=heads, **self.layer_options)
        except (ValueError, TypeError) as e:
            raise ConfigError("layer_options", f"core {self.core!r}: {e}") from None

    def resume_fixups(self, changes: dict) -> dict:
        if "actors" in changes and "envs_per_actor" not in changes:
            changes["envs_per_actor"] = None
        return changes

    def default_out(self) -> str:
        name = self.game if self.env == "atari" else "memory"
        return f"runs/{name}-{self.core}-s{self.seed}"

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

    @classmethod
    def from_dict(cls, data: dict) -> "RLConfig":
        from ..train.options import config_from_dict

        if isinstance(data, dict):
            data = dict(data)
            for name in LIFE_FIELDS:  # runs saved before these options existed played full games without them
                data.setdefault(name, False)
        return config_from_dict(cls, data)
