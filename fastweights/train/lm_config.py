"""``LMConfig``: every knob of a language-model run on WikiText-103, validated when it is constructed.

A bad value raises :class:`LMConfigError` (the training system's ``TrainConfigError``, a ``ValueError``)
whose message names the field and the value and whose ``field`` attribute names it (the command line maps
it back to its flag). A ``preset`` fills every size and optimisation field left as None (0 turns
``grad_clip`` off and makes ``eval_tokens`` the whole validation set); the resolved values are what
``config.json`` records, so a saved run does not depend on the presets staying the same.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

from .config import ModelRunConfig, check_model
from .options import ConfigError, option, redeclare

LMConfigError = ConfigError

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
class LMConfig(ModelRunConfig):
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

    kind: typing.ClassVar[str] = "lm"

    task: str = option("lm", "the task", choices=("lm",), cli=False)
    data_dir: str | None = option(None, "directory with wiki.{train,valid,test}.tokens (required)", flag="--data",
                                  metavar="DIR")
    train_file: str | None = option(None, "training file to use instead of DIR/wiki.train.tokens (its words make "
                                          "the vocabulary)", metavar="FILE")
    cache_dir: str | None = option(None, "root of the tokenised cache (default $FASTWEIGHTS_CACHE or "
                                         "~/.cache/fastweights)", metavar="DIR", resumable=True)
    vocab_size: int | None = option(None, "vocabulary size (from the data)", low=2, cli=False)
    cutoffs: list | None = option(None, "adaptive-softmax cutoffs (None: the paper's, scaled; []: full softmax)",
                                  item=int, low=1, cli=False)
    data_sha256: dict | None = option(None, "checksums of the data files (from the data)", cli=False)

    model: str = redeclare(ModelRunConfig, "model", "deltanet")
    preset: str = option("small", "small | medium (the paper's sizes) | tiny (for a CPU)", choices=tuple(PRESETS),
                         metavar="small|medium|tiny")
    d_model: int | None = redeclare(ModelRunConfig, "d_model", None, "model width (preset)")
    num_layers: int | None = redeclare(ModelRunConfig, "num_layers", None, "blocks (preset)")
    num_heads: int | None = redeclare(ModelRunConfig, "num_heads", None, "heads (preset)")
    head_dim: int | None = option(None, "size of one head (preset)", low=1, high=65536)
    d_ff: int | None = option(None, "feedforward width (preset)", low=1, high=2**20)
    dropout: float | None = redeclare(ModelRunConfig, "dropout", None, "dropout (preset; 0.1)")
    segment_len: int | None = option(None, "words per training segment (preset)", low=1, high=2**20)
    batch_size: int | None = redeclare(ModelRunConfig, "batch_size", None, "streams per batch (preset)")
    carry_state: bool = option(False, "carry the fast weights / recurrent state across consecutive segments "
                                      "(detached)")

    steps: int | None = redeclare(ModelRunConfig, "steps", None, "optimizer steps; the cosine decay ends there "
                                                                 "(preset)", resumable=False)
    lr: float | None = redeclare(ModelRunConfig, "lr", None, "Adam peak learning rate (preset)")
    min_lr: float = option(0.0, "learning rate at the end of the cosine", low=0, high=10)
    betas: list | None = redeclare(ModelRunConfig, "betas", None, "Adam betas B1,B2 (default 0.9,0.999)")
    warmup_steps: int | None = redeclare(ModelRunConfig, "warmup_steps", None, "linear warm-up steps (preset)")
    grad_clip: float | None = redeclare(ModelRunConfig, "grad_clip", None, "max gradient norm, 0/none/off: no "
                                                                           "clipping (preset; 0.25)")
    eval_interval: int = redeclare(ModelRunConfig, "eval_interval", 500)
    eval_tokens: int | None = option(None, "validate on the first N validation words during training (0: all; "
                                           "preset)", low=0, resumable=True)
    eval_batch_size: int = redeclare(ModelRunConfig, "eval_batch_size", 16, "windows per evaluation batch")
    log_interval: int = redeclare(ModelRunConfig, "log_interval", 50)

    def resolve(self) -> None:
        preset = PRESETS.get(self.preset)
        if preset is not None:
            for name in PRESET_FIELDS:
                if getattr(self, name) is None:
                    setattr(self, name, preset[name])
        if self.betas is None:
            self.betas = [0.9, 0.999]

    def check(self) -> None:
        if self.data_dir is None:
            raise ConfigError("data_dir", "data_dir is required (a directory with wiki.valid.tokens and "
                                          "wiki.test.tokens), got None")
        if self.cutoffs is not None and any(a >= b for a, b in zip(self.cutoffs, self.cutoffs[1:])):
            raise ConfigError("cutoffs", f"cutoffs must be increasing, got {self.cutoffs!r}")
        if self.warmup_steps >= self.steps:
            raise ConfigError("warmup_steps", f"warmup_steps must be below steps ({self.steps}), "
                                              f"got {self.warmup_steps!r}")
        if self.min_lr > self.lr:
            raise ConfigError("min_lr", f"min_lr ({self.min_lr:g}) must not be above lr ({self.lr:g})")
        vocab = self.vocab_size or (max(self.cutoffs) + 1 if self.cutoffs else 2)  # the data's is not read yet
        check_model(self, lambda: self.model_config(vocab))

    def preflight(self, resume: bool) -> None:
        from ..tasks.wikitext import WikiTextError, split_paths

        try:
            split_paths(self.data_dir, self.train_file)
        except WikiTextError as e:
            field = "train_file" if self.train_file is not None and str(self.train_file) in str(e) else "data_dir"
            raise ConfigError(field, str(e)) from None

    def default_out(self) -> str:
        return f"runs/lm-{self.model}-{self.preset}-s{self.seed}"

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
        options.update(self.layer_options)
        return ModelConfig(layer=self.model, layer_options=options, vocab_size=V, d_model=self.d_model,
                           num_layers=self.num_layers, num_heads=self.num_heads, head_dim=self.head_dim,
                           d_ff=self.d_ff, dropout=float(self.dropout), head="lm", tie_embeddings=True,
                           adaptive_softmax=self.resolved_cutoffs(V))
