"""Reinforcement learning: IMPALA (Espeholt et al. 2018) with fast-weight cores (Irie et al. 2021).

- :mod:`.vtrace`: ``from_importance_weights`` (V-trace targets and policy-gradient advantages);
- :mod:`.config`: :class:`RLConfig`, validated;
- :mod:`.actors`: actor processes, rollouts, the bounded queue and :class:`ActorError`;
- :mod:`.impala`: the learner, :func:`train`;
- :mod:`.evaluate`: :func:`evaluate_rl_run`, greedy play of full episodes.

The agent itself (encoders, cores, heads) is :class:`fastweights.models.agent.Agent`; the environments
are :mod:`fastweights.tasks.memory_env` and :mod:`fastweights.tasks.atari`.
"""

from .actors import ActorError
from .config import RLConfig, RLConfigError
from .evaluate import evaluate_rl_run
from .impala import RLError, impala_loss, is_rl_run, load_rl_config, resume_rl_config, train
from .vtrace import VTraceReturns, from_importance_weights

__all__ = ["ActorError", "RLConfig", "RLConfigError", "RLError", "VTraceReturns", "evaluate_rl_run",
           "from_importance_weights", "impala_loss", "is_rl_run", "load_rl_config", "resume_rl_config", "train"]
