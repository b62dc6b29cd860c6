"""Supervised training on the algorithmic tasks: a validated config, the loop, checkpoints, evaluation.

- :class:`TrainConfig` (``config``): every knob of a run, validated (``TrainConfigError`` names the field);
- :func:`train` (``loop``): trains into a run directory, resumable, DDP under ``torchrun``;
- :func:`evaluate_run`: test-split metrics of a run's best-validation checkpoint;
- ``checkpoint``: atomic safetensors + ``weights_only`` checkpoints (``CheckpointError`` when damaged);
- ``data``: encoded splits, the resumable seeded batch sampler and the task objectives;
- ``runlog``: metrics JSONL, TensorBoard events, the learning-curve PNG and the progress display.
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig, TrainConfigError
from .loop import TrainError, evaluate, evaluate_run, load_run_config, resume_config, train

__all__ = ["TrainConfig", "TrainConfigError", "TrainError", "CheckpointError", "train", "evaluate", "evaluate_run",
           "load_run_config", "resume_config", "load_checkpoint", "save_checkpoint"]
