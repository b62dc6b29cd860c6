"""Supervised training on the algorithmic tasks: a validated config, the loop, checkpoints, evaluation.

- ``options``: how a run's config fields are declared once (help, bounds, resumability) and validated;
  ``runs``: the registry of run kinds and the one configure / train / resume / load / evaluate path;
- :class:`TrainConfig` (``config``): every knob of a run, validated (``ConfigError`` names the field);
- :func:`train` (``loop``): trains into a run directory, resumable, DDP under ``torchrun``;
- ``driver``: the step loop :func:`train` and :func:`train_lm` share (:class:`~.driver.StepLoop`: NaN stop,
  SIGTERM, time budget, validation, checkpoints, the summary), given a :class:`~.driver.Task` of hooks;
- :func:`evaluate_run`: test-split metrics of a run's best-validation checkpoint;
- ``checkpoint``: atomic safetensors + ``weights_only`` checkpoints (``CheckpointError`` when damaged);
- ``data``: encoded splits, the resumable seeded batch sampler and the task objectives;
- ``runlog``: metrics JSONL, TensorBoard events, the learning-curve PNG and the progress display;
- ``lm`` / ``lm_config``: language modelling on WikiText-103 (:class:`LMConfig`, :func:`train_lm`,
  :func:`evaluate_lm_run`, :func:`generate_text`).
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig, TrainConfigError
from .lm import LMTrainError, evaluate_lm, evaluate_lm_run, generate_text, train_lm
from .lm_config import LMConfig, LMConfigError
from .loop import TrainError, evaluate, evaluate_run, load_run_config, resume_config, train
from .options import ConfigError
from .runs import RunError

__all__ = ["TrainConfig", "TrainConfigError", "TrainError", "CheckpointError", "train", "evaluate", "evaluate_run",
           "load_run_config", "resume_config", "load_checkpoint", "save_checkpoint", "LMConfig", "LMConfigError",
           "LMTrainError", "train_lm", "evaluate_lm", "evaluate_lm_run", "generate_text", "ConfigError", "RunError"]
