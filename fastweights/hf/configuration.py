"""``FastWeightsConfig``: a :class:`~fastweights.models.ModelConfig` of a language model as a ``transformers`` config.

Every field of ``ModelConfig`` is a field here, under the same name, and is validated the same way (by building
the ``ModelConfig``: a bad value raises its :class:`~fastweights.models.ConfigError` naming the field). The head
is always ``"lm"``. ``hidden_size``, ``num_hidden_layers`` and ``num_attention_heads`` are the names other tools
read, mapped onto ``d_model``, ``num_layers`` and ``num_heads``.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from ..models import ModelConfig

MODEL_TYPE = "fastweights"
FIELDS = ("layer", "layer_options", "vocab_size", "d_model", "num_layers", "num_heads", "head_dim", "d_ff", "dropout",
          "tie_embeddings", "adaptive_softmax", "pos_encoding")


class FastWeightsConfig(PretrainedConfig):
    """The config of a :class:`~fastweights.hf.FastWeightsForCausalLM`: the ``ModelConfig`` fields of its language
    model (head ``"lm"``) and the token ids of the tokenizer (``eos_token_id``, ``pad_token_id``, ...)."""

    model_type = MODEL_TYPE
    attribute_map = {"hidden_size": "d_model", "num_hidden_layers": "num_layers",
                     "num_attention_heads": "num_heads"}

    def __init__(self, layer: str = "deltanet", layer_options: dict | None = None, vocab_size: int = 256,
                 d_model: int = 128, num_layers: int = 2, num_heads: int = 4, head_dim: int | None = None,
                 d_ff: int | None = None, dropout: float = 0.0, tie_embeddings: bool = True,
                 adaptive_softmax: list[int] | None = None, pos_encoding: str | None = None, use_cache: bool = True,
                 **kwargs):
        cfg = ModelConfig(layer=layer, layer_options=dict(layer_options or {}), vocab_size=vocab_size,
                          d_model=d_model, num_layers=num_layers, num_heads=num_heads, head_dim=head_dim, d_ff=d_ff,
                          dropout=dropout, head="lm", tie_embeddings=tie_embeddings,
                          adaptive_softmax=adaptive_softmax, pos_encoding=pos_encoding)
        for name in FIELDS:  # the validated, resolved values (d_ff and pos_encoding defaults filled in)
            setattr(self, name, getattr(cfg, name))
        self.use_cache = use_cache
        # transformers ties lm_head to the embedding when this is true; with the adaptive softmax the tied words
        # live inside the softmax itself (one tensor each), so there is nothing for transformers to tie
        kwargs["tie_word_embeddings"] = bool(tie_embeddings and adaptive_softmax is None)
        super().__init__(**kwargs)

    def model_config(self) -> ModelConfig:
        """The ``ModelConfig`` of the language model (head ``"lm"``)."""
        return ModelConfig(head="lm", **{name: getattr(self, name) for name in FIELDS})

    @classmethod
    def from_model_config(cls, cfg: ModelConfig, **kwargs) -> "FastWeightsConfig":
        """The config of ``cfg``, a language model's ``ModelConfig`` (head ``"lm"``); ``kwargs``: token ids etc."""
        if cfg.head != "lm":
            raise ValueError(f"a transformers causal LM needs a ModelConfig with head 'lm', got head {cfg.head!r}")
        return cls(**{name: getattr(cfg, name) for name in FIELDS}, **kwargs)
