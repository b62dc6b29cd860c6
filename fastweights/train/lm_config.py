"""``LMConfig``: every knob of a language-model run on WikiText-103, validated when it is constructed.

A bad value raises :class:`LMConfigError` (the training system's ``TrainConfigError``, a ``ValueError``)
whose message names the field and the value and whose ``field`` attribute names it (the command line maps
it back to its flag). A ``preset`` fills every size and optimisation field left as None (0 turns
``grad_clip`` off and makes ``eval_tokens`` the whole validation set); the resolved values are what
``config.json`` records, so a saved run does not depend on the presets staying the same.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from .common import BUDGET_CLOCKS
from .config import TrainConfigError, _int, _is_int, _number

LMConfigError = TrainConfigError

# The paper's full-data cutoffs for its 267,735-word vocabulary; other vocabularies get them scaled.
PAPER_VOCAB = 267_735
PAPER_CUTOFFS = (20_000, 40_000, 200_000)

# small and medium: DESIGN.md (Irie et al. 2021, WikiText-103): Adam 2.5e-4, 2,000 warm-up steps, cosine
# decay, clip 0.25, dropout 0.1. medium's 16 layers and FF 4096 and every batch size and step count are
# ours (DESIGN.md does not give them). tiny: sized for a CPU: 1,000 steps of DeltaNet take about 5 CPU-minutes
# on one thread and reach well below half the unigram perplexity on the 2.75 MB training prefix; a short
# warm-up and a larger rate than the paper's, and validation on the first 32,768 words during training.
PRESETS = {
    "small": dict(d_model=128, num_layers=16, num_heads=8, head_dim=16, d_ff=2048, segment_len=256, batch_size=96,
                  dropout=0.1, lr=2.5e-4, warmup_steps=2000, grad_clip=0.25, steps=200_000, eval_tokens=0),
    "medium": dict(d_model=256, num_layers=16, num_heads=8, head_dim=32, d_ff=4096, segment_len=384, batch_size=96,
                   dropout=0.1, lr=2.5e-4, warmup_steps=2000, grad_clip=0.25, steps=200_000, eval_tokens=0),
    "tiny": dict(d_model=128, num_layers=2, num_heads=4, head_dim=32, d_ff=512, segment_len=128, batch_size=16,
                 dropout=0.1, lr=2e-3, warmup_steps=100, grad_clip=0.25, steps=1000, eval_tokens=32768),
}
PRESET_FIELDS = tuple(PRESETS["small"])


def scaled_cutoffs(vocab_size: int) -> list[int] | None:
    """The paper's adaptive-softmax cutoffs scaled to ``vocab_size`` (None when too small for any)."""
    cut = sorted({round(c * vocab_size / PAPER_VOCAB) for c in PAPER_CUTOFFS})
    cut = [c for c in cut if 0 < c < vocab_size]
    return cut or None


@dataclass
class LMConfig:
    """One language-model run (word-level WikiText-103).

    Data: ``data_dir`` (a directory with ``wiki.{train,valid,test}.tokens``), ``train_file`` (another
    training file, e.g. a prefix; the vocabulary is built from it), ``cache_dir`` (root of the tokenised
    cache; None: ``$FASTWEIGHTS_CACHE`` or ``~/.cache/fastweights``). ``vocab_size``, ``cutoffs`` and
    ``data_sha256`` are filled in from the data when the run starts (``cutoffs`` None: the paper's
    20k/40k/200k scaled to the vocabulary; ``[]``: a full softmax).

    Model: ``model`` (a layer name), ``preset`` (``small`` | ``medium`` | ``tiny``), and the sizes it
    fills: ``d_model``, ``num_layers``, ``num_heads``, ``head_dim``, ``d_ff``, ``dropout``. Embeddings are
    tied to the adaptive softmax's output words. The transformer attends within a window of
    ``segment_len`` tokens (its carried key/value cache is that window).

    Context: ``segment_len`` tokens per training segment; the training text is cut into ``batch_size``
    contiguous streams, read a segment at a time. ``carry_state``: each segment starts from the previous
    segment's final state (fast weights, recurrent state, cache), detached (truncated BPTT); otherwise
    every segment starts from a fresh state.

    Optimisation: Adam ``lr``, ``betas``; ``warmup_steps`` of linear warm-up (``LinearLR``) then cosine
    decay to ``min_lr`` at ``steps`` (``CosineAnnealingLR``), chained by ``SequentialLR``; ``grad_clip``
    (max global norm; 0: off).

    Bookkeeping as in :class:`~fastweights.train.TrainConfig`: ``seed``, ``out``, ``eval_interval``
    (steps between validations and checkpoints), ``eval_tokens`` (validate on the first N validation
    tokens during training; 0: all), ``save_interval``, ``log_interval``, ``eval_batch_size``,
    ``threads``, ``time_budget_minutes`` with ``budget_clock`` (``wall`` | ``cpu``).
    """

    task: str = "lm"
    data_dir: str | None = None
    train_file: str | None = None
    cache_dir: str | None = None
    vocab_size: int | None = None
    cutoffs: list | None = None
    data_sha256: dict | None = None

    model: str = "deltanet"
    preset: str = "small"
    d_model: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    head_dim: int | None = None
    d_ff: int | None = None
    dropout: float | None = None
    segment_len: int | None = None
    batch_size: int | None = None
    carry_state: bool = False

    steps: int | None = None
    lr: float | None = None
    min_lr: float = 0.0
    betas: list | None = None
    warmup_steps: int | None = None
    grad_clip: float | None = None

    seed: int = 0
    out: str = "runs/lm"
    eval_interval: int = 500
    eval_tokens: int | None = None
    save_interval: int | None = None
    log_interval: int = 50
    eval_batch_size: int = 16
    threads: int | None = None
    time_budget_minutes: float | None = None
    budget_clock: str = "wall"

    def __post_init__(self):
        from ..models import ConfigError

        if self.task != "lm":
            raise LMConfigError("task", f"task must be 'lm', got {self.task!r}")
        for name in ("data_dir", "train_file", "cache_dir"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v):
                raise LMConfigError(name, f"{name} must be a non-empty path or None, got {v!r}")
        if self.data_dir is None:
            raise LMConfigError("data_dir", "data_dir is required (a directory with wiki.valid.tokens and "
                                            "wiki.test.tokens), got None")
        if self.preset not in PRESETS:
            raise LMConfigError("preset", f"preset must be one of {list(PRESETS)}, got {self.preset!r}")
        preset = PRESETS[self.preset]
        for name in PRESET_FIELDS:
            if getattr(self, name) is None:
                setattr(self, name, preset[name])
        if self.betas is None:
            self.betas = [0.9, 0.999]
        _int("vocab_size", self.vocab_size, 2, optional=True)
        if self.cutoffs is not None:
            if not isinstance(self.cutoffs, (list, tuple)) or not all(_is_int(c) and c > 0 for c in self.cutoffs):
                raise LMConfigError("cutoffs", f"cutoffs must be a list of positive ints, got {self.cutoffs!r}")
            self.cutoffs = list(self.cutoffs)
        if self.data_sha256 is not None and not isinstance(self.data_sha256, dict):
            raise LMConfigError("data_sha256", f"data_sha256 must be a dict or None, got {self.data_sha256!r}")

        _int("d_model", self.d_model, 1)
        _int("num_layers", self.num_layers, 1)
        _int("num_heads", self.num_heads, 1)
        _int("head_dim", self.head_dim, 1)
        _int("d_ff", self.d_ff, 1)
        _number("dropout", self.dropout, 0.0, 1.0)
        _int("segment_len", self.segment_len, 1)
        _int("batch_size", self.batch_size, 1)
        if not isinstance(self.carry_state, bool):
            raise LMConfigError("carry_state", f"carry_state must be a bool, got {self.carry_state!r}")
        try:
            self.model_config(self.vocab_size or 2)
        except ConfigError as e:
            name = {"layer": "model", "adaptive_softmax": "cutoffs"}.get(e.field, e.field)
            raise LMConfigError(name, str(e).replace("layer must", "model must", 1)) from None

        _int("steps", self.steps, 1)
        _number("lr", self.lr, 0.0, low_open=True)
        _number("min_lr", self.min_lr, 0.0)
        if (not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0
                           for b in self.betas)):
            raise LMConfigError("betas", f"betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = [float(b) for b in self.betas]
        _int("warmup_steps", self.warmup_steps, 0)
        if self.warmup_steps >= self.steps:
            raise LMConfigError("warmup_steps", f"warmup_steps must be below steps ({self.steps}), "
                                                f"got {self.warmup_steps!r}")
        _number("grad_clip", self.grad_clip, 0.0)

        _int("seed", self.seed, 0)
        if not isinstance(self.out, str) or not self.out:
            raise LMConfigError("out", f"out must be a non-empty path, got {self.out!r}")
        _int("eval_interval", self.eval_interval, 1)
        _int("eval_tokens", self.eval_tokens, 0)
        _int("save_interval", self.save_interval, 1, optional=True)
        _int("log_interval", self.log_interval, 1)
        _int("eval_batch_size", self.eval_batch_size, 1)
        _int("threads", self.threads, 1, optional=True)
        _number("time_budget_minutes", self.time_budget_minutes, 0.0, low_open=True, optional=True)
        if self.budget_clock not in BUDGET_CLOCKS:
            raise LMConfigError("budget_clock", f"budget_clock must be one of {list(BUDGET_CLOCKS)}, "
                                                f"got {self.budget_clock!r}")

    # ------------------------------------------------------------------------------------------------
    def resolved_cutoffs(self, vocab_size: int) -> list[int] | None:
        if self.cutoffs is None:
            return scaled_cutoffs(vocab_size)
        return list(self.cutoffs) or None

    def model_config(self, vocab_size: int | None = None):
        """The :class:`~fastweights.models.ModelConfig` of this run for a vocabulary of ``vocab_size``
        words (default: the recorded ``vocab_size``)."""
        from ..models import ModelConfig

        V = vocab_size or self.vocab_size
        if V is None:
            raise ValueError("the vocabulary size is not known before the data is read")
        options = {"window": self.segment_len} if self.model == "transformer" else {}
        return ModelConfig(layer=self.model, layer_options=options, vocab_size=V, d_model=self.d_model,
                           num_layers=self.num_layers, num_heads=self.num_heads, head_dim=self.head_dim,
                           d_ff=self.d_ff, dropout=float(self.dropout), head="lm", tie_embeddings=True,
                           adaptive_softmax=self.resolved_cutoffs(V))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LMConfig":
        if not isinstance(data, dict):
            raise ValueError(f"an LM config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LM config field(s): {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"
