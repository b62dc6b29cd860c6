"""Models: a validated config, the pre-LN block stack (shared with the RL cores) and the task heads.

``build_model(layer="deltanet", vocab_size=..., head="lm", ...)`` or ``FWPModel(ModelConfig(...))``;
``model(ids, state=None, done=None, lengths=None) -> (output, new_state)``. See docs/models.md.
"""

from .blocks import Block, BlockStack
from .config import HEADS, POS_ENCODINGS, ConfigError, ModelConfig
from .model import FWPModel, build_model, count_parameters, last_valid, sinusoidal_positions

__all__ = ["HEADS", "POS_ENCODINGS", "ConfigError", "ModelConfig", "Block", "BlockStack", "FWPModel", "build_model",
           "count_parameters", "last_valid", "sinusoidal_positions"]
