"""``ModelConfig``: every knob of a model, validated when it is constructed.

A bad value raises :class:`ConfigError` (a ``ValueError``) whose message names the field and the value,
and whose ``field`` attribute names the field (the command line maps it back to its flag).
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field

HEADS = ("token", "sequence", "lm")
POS_ENCODINGS = ("none", "sinusoidal")


class ConfigError(ValueError):
    """A bad ``ModelConfig`` value; ``field`` names the field."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


def _positive_int(name, value, optional=False):
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(name, f"{name} must be a positive int{' or None' if optional else ''}, got {value!r}")


@dataclass
class ModelConfig:
    """A stack of pre-LN blocks (token mixer + ReLU feedforward) on an embedding, with one head.

    Fields:
        layer: the token mixer, one of ``fastweights.layers.layer_names()``.
        layer_options: extra keyword options for the mixer (e.g. ``{"window": 256}`` for the transformer).
        vocab_size: number of input token ids (and of output words for the ``lm`` head).
        d_model: width of the residual stream.
        num_layers: number of blocks.
        num_heads: heads per mixer.
        head_dim: size of one head (None: d_model // num_heads, which must then divide evenly).
        d_ff: width of the feedforward (None: 4 * d_model).
        dropout: dropout on the embedding and on each residual branch, in [0, 1).
        head: ``"token"`` (a class per token), ``"sequence"`` (a class per sequence, from its last valid
            token) or ``"lm"`` (next-word distribution).
        num_classes: classes of the token/sequence heads (required there, must be None for ``lm``).
        tie_embeddings: ``lm`` head only: the input embedding and the output word weights are one tensor.
        adaptive_softmax: ``lm`` head only: None (a full softmax) or the increasing cutoffs of
            ``torch.nn.AdaptiveLogSoftmaxWithLoss``, e.g. ``[20000, 40000, 200000]`` (div_value 1).
        pos_encoding: ``"none"`` or ``"sinusoidal"``; None picks the default: sinusoidal for the
            transformer, none for every other layer (the FWPs and the LSTM need no positions).
    """

    layer: str = "deltanet"
    layer_options: dict = field(default_factory=dict)
    vocab_size: int = 256
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    head_dim: int | None = None
    d_ff: int | None = None
    dropout: float = 0.0
    head: str = "lm"
    num_classes: int | None = None
    tie_embeddings: bool = True
    adaptive_softmax: list[int] | None = None
    pos_encoding: str | None = None

    def __post_init__(self):
        from ..layers import layer_names
        from ..layers.base import _REGISTRY

        if self.layer not in layer_names():
            raise ConfigError("layer", f"layer must be one of {layer_names()}, got {self.layer!r}")
        if not isinstance(self.layer_options, dict):
            raise ConfigError("layer_options", f"layer_options must be a dict, got {self.layer_options!r}")
        known = [p for p in inspect.signature(_REGISTRY[self.layer].__init__).parameters
                 if p not in ("self", "d_model", "num_heads", "head_dim")]
        for key, value in self.layer_options.items():
            if key not in known:
                raise ConfigError("layer_options", f"layer_options {self.layer_options!r}: layer {self.layer!r} "
                                                   f"has no option {key!r}; its options are {known}")
        _positive_int("vocab_size", self.vocab_size)
        _positive_int("d_model", self.d_model)
        _positive_int("num_layers", self.num_layers)
        _positive_int("num_heads", self.num_heads)
        _positive_int("head_dim", self.head_dim, optional=True)
        if self.head_dim is None and self.d_model % self.num_heads:
            raise ConfigError("num_heads", f"num_heads ({self.num_heads}) must divide d_model ({self.d_model}) "
                                           f"when head_dim is not given")
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        _positive_int("d_ff", self.d_ff)
        if (not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool)
                or not 0.0 <= self.dropout < 1.0):
            raise ConfigError("dropout", f"dropout must be a number in [0, 1), got {self.dropout!r}")
        self.dropout = float(self.dropout)
        if self.head not in HEADS:
            raise ConfigError("head", f"head must be one of {list(HEADS)}, got {self.head!r}")
        if self.head == "lm":
            if self.num_classes is not None:
                raise ConfigError("num_classes", f"num_classes must be None for head 'lm' (the vocabulary is "
                                                 f"the classes), got {self.num_classes!r}")
        else:
            _positive_int("num_classes", self.num_classes)
        if not isinstance(self.tie_embeddings, bool):
            raise ConfigError("tie_embeddings", f"tie_embeddings must be a bool, got {self.tie_embeddings!r}")
        if self.adaptive_softmax is not None:
            cut = self.adaptive_softmax
            if self.head != "lm":
                raise ConfigError("adaptive_softmax", f"adaptive_softmax needs head 'lm', got cutoffs {cut!r} "
                                                      f"with head {self.head!r}")
            ok = (isinstance(cut, (list, tuple)) and len(cut) > 0
                  and all(isinstance(c, int) and not isinstance(c, bool) for c in cut)
                  and all(0 < c < self.vocab_size for c in cut)
                  and all(a < b for a, b in zip(cut, cut[1:])))
            if not ok:
                raise ConfigError("adaptive_softmax", f"adaptive_softmax must be a non-empty list of increasing "
                                                      f"ints in (0, vocab_size={self.vocab_size}), got {cut!r}")
            self.adaptive_softmax = list(cut)
        if self.pos_encoding is None:
            self.pos_encoding = "sinusoidal" if self.layer == "transformer" else "none"
        if self.pos_encoding not in POS_ENCODINGS:
            raise ConfigError("pos_encoding", f"pos_encoding must be one of {list(POS_ENCODINGS)}, "
                                              f"got {self.pos_encoding!r}")

    def to_dict(self) -> dict:
        return asdict(self)
