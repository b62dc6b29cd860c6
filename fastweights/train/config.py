"""``TrainConfig``: every knob of a supervised training run, validated when it is constructed.

A bad value raises :class:`TrainConfigError` (a ``ValueError``) whose message names the field and the
value, and whose ``field`` attribute names the field (the command line maps it back to its flag).
Model-shape fields are also checked by building the :class:`~fastweights.models.ModelConfig` they imply.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

from .common import BUDGET_CLOCKS

TASKS = ("code-exec", "listops")
LOSS_POSITIONS = ("prints", "all")


class TrainConfigError(ValueError):
    """A bad ``TrainConfig`` value; ``field`` names the field."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(name, value, low, optional=False, error=TrainConfigError):
    """Raises ``error(name, message)`` unless ``value`` is an int >= ``low`` (or None, if ``optional``).
    Shared by the configs of every loop (supervised, language model, RL), each with its error class."""
    if optional and value is None:
        return
    if not _is_int(value) or value < low:
        raise error(name, f"{name} must be an integer >= {low}{' or None' if optional else ''}, got {value!r}")


def _number(name, value, low=None, high=None, low_open=False, high_open=True, optional=False,
            error=TrainConfigError):
    """Raises ``error(name, message)`` unless ``value`` is a finite number within the bounds (each open or
    closed), or None if ``optional``."""
    if optional and value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f" {'>' if low_open else '>='} {low}"
        hi = "" if high is None else f" and {'<' if high_open else '<='} {high}"
        raise error(name, f"{name} must be a finite number{lo}{hi}{' or None' if optional else ''}, got {value!r}")


@dataclass
class TrainConfig:
    """One supervised run on an algorithmic task.

    Task and data:
        task: ``"code-exec"`` or ``"listops"``.
        num_vars, length: code execution: variables (3 or 5) and statements per program (100).
        depth, ops: ListOps: exact bracket depth (10) and operators (MIN, MAX, FIRST).
        sizes: examples in train / valid / test (10k / 1k / 1k, as in the paper).
        data_seed: seed of the generated splits (kept apart from ``seed`` so every run sees the same data).
        data_dir: read the splits from this ``fastweights data`` directory instead of generating them
            (the task options above are then taken from its ``meta.json``).

    Model: ``model`` (a layer name), ``d_model``, ``num_layers``, ``num_heads``, ``dropout``; the
    positional encoding is the models' default (none for the FWPs and the LSTM).

    Optimisation (the paper's recipe): Adam ``lr`` 3e-4 with ``betas`` (0.9, 0.995), ``batch_size`` 64
    (the global batch; split across processes under DDP), ``grad_clip`` (max global grad norm; None
    disables), ``warmup_steps`` of linear warm-up then a constant rate. Exactly one of ``steps`` and
    ``epochs`` sets the length (neither: ``steps`` = 5000).

    loss_positions (code execution): ``"prints"`` (the default) trains on the executed-print positions
    only, those whose target is a value; ``"all"`` also on every ``_``.

    Bookkeeping: ``seed`` (weights, dropout, data order), ``out`` (the run directory), ``eval_interval``
    (steps between validations, each also saving a checkpoint), ``save_interval`` (extra checkpoints
    between validations; None: only at evaluations), ``log_interval`` (steps between train-metric
    records), ``eval_batch_size``, ``threads`` (torch intra-op threads; None keeps torch's default).

    time_budget_minutes: a wall-clock budget (None: no budget), so that runs can be compared at equal
    CPU time. The run ends after the first optimizer step at which the training loop's elapsed wall time
    (evaluations and checkpoints included; start-up and data generation not), summed across ``--resume``
    sessions through the checkpoint, exceeds it, with the usual final evaluation and checkpoint;
    ``steps``/``epochs`` still cap the run. It may change on resume.

    budget_clock: what the time budget counts. ``"wall"`` (the default) is wall-clock time; ``"cpu"`` is
    the CPU time of the training process, all its threads summed (``time.process_time``), which stays fair
    when several runs share a machine: a run on 2 threads for 5 minutes spends about 10 CPU-minutes.
    Fixed for the life of a run.
    """

    task: str = "code-exec"
    num_vars: int = 5
    length: int = 100
    depth: int = 10
    ops: list = field(default_factory=lambda: ["MIN", "MAX", "FIRST"])
    sizes: list = field(default_factory=lambda: [10000, 1000, 1000])
    data_seed: int = 0
    data_dir: str | None = None

    model: str = "delta-rnn"
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.1

    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 64
    lr: float = 3e-4
    betas: list = field(default_factory=lambda: [0.9, 0.995])
    grad_clip: float | None = 1.0
    warmup_steps: int = 0
    loss_positions: str = "prints"

    seed: int = 0
    out: str = "runs/run"
    eval_interval: int = 200
    save_interval: int | None = None
    log_interval: int = 10
    eval_batch_size: int = 256
    threads: int | None = None
    time_budget_minutes: float | None = None
    budget_clock: str = "wall"

    def __post_init__(self):
        from ..models import ConfigError
        from ..tasks.listops import ALL_OPS, MAX_DEPTH

        if self.task not in TASKS:
            raise TrainConfigError("task", f"task must be one of {list(TASKS)}, got {self.task!r}")
        if self.num_vars not in (3, 5) or not _is_int(self.num_vars):
            raise TrainConfigError("num_vars", f"num_vars must be 3 or 5, got {self.num_vars!r}")
        _int("length", self.length, 2)
        if not _is_int(self.depth) or not 1 <= self.depth <= MAX_DEPTH:
            raise TrainConfigError("depth", f"depth must be an int in 1..{MAX_DEPTH}, got {self.depth!r}")
        if (not isinstance(self.ops, (list, tuple)) or not self.ops or any(o not in ALL_OPS for o in self.ops)
                or len(set(self.ops)) != len(self.ops)):
            raise TrainConfigError("ops", f"ops must be distinct names from {list(ALL_OPS)}, got {self.ops!r}")
        self.ops = list(self.ops)
        if (not isinstance(self.sizes, (list, tuple)) or len(self.sizes) != 3
                or not all(_is_int(s) and s >= 1 for s in self.sizes)):
            raise TrainConfigError("sizes", f"sizes must be three positive ints (train, valid, test), "
                                            f"got {self.sizes!r}")
        self.sizes = list(self.sizes)
        _int("data_seed", self.data_seed, 0)
        if self.data_dir is not None and (not isinstance(self.data_dir, str) or not self.data_dir):
            raise TrainConfigError("data_dir", f"data_dir must be a non-empty path or None, got {self.data_dir!r}")

        _int("d_model", self.d_model, 1)
        _int("num_layers", self.num_layers, 1)
        _int("num_heads", self.num_heads, 1)
        _number("dropout", self.dropout, 0.0, 1.0)
        try:
            self.model_config()
        except ConfigError as e:
            name = {"layer": "model", "num_heads": "num_heads", "d_model": "d_model"}.get(e.field, e.field)
            raise TrainConfigError(name, str(e).replace("layer must", "model must", 1)) from None

        _int("steps", self.steps, 1, optional=True)
        _int("epochs", self.epochs, 1, optional=True)
        if self.steps is not None and self.epochs is not None:
            raise TrainConfigError("steps", f"give steps or epochs, not both (steps={self.steps!r}, "
                                            f"epochs={self.epochs!r})")
        if self.steps is None and self.epochs is None:
            self.steps = 5000
        _int("batch_size", self.batch_size, 1)
        _number("lr", self.lr, 0.0, low_open=True)
        if (not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0
                           for b in self.betas)):
            raise TrainConfigError("betas", f"betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = [float(b) for b in self.betas]
        _number("grad_clip", self.grad_clip, 0.0, low_open=True, optional=True)
        _int("warmup_steps", self.warmup_steps, 0)
        if self.loss_positions not in LOSS_POSITIONS:
            raise TrainConfigError("loss_positions", f"loss_positions must be one of {list(LOSS_POSITIONS)}, "
                                                     f"got {self.loss_positions!r}")

        _int("seed", self.seed, 0)
        if not isinstance(self.out, str) or not self.out:
            raise TrainConfigError("out", f"out must be a non-empty path, got {self.out!r}")
        _int("eval_interval", self.eval_interval, 1)
        _int("save_interval", self.save_interval, 1, optional=True)
        _int("log_interval", self.log_interval, 1)
        _int("eval_batch_size", self.eval_batch_size, 1)
        _int("threads", self.threads, 1, optional=True)
        _number("time_budget_minutes", self.time_budget_minutes, 0.0, low_open=True, optional=True)
        if self.budget_clock not in BUDGET_CLOCKS:
            raise TrainConfigError("budget_clock", f"budget_clock must be one of {list(BUDGET_CLOCKS)}, "
                                                   f"got {self.budget_clock!r}")

    # ------------------------------------------------------------------------------------------------
    def task_options(self) -> dict:
        """The generator's options of this task (as ``make_splits`` takes them)."""
        if self.task == "code-exec":
            return {"num_vars": self.num_vars, "length": self.length}
        return {"depth": self.depth, "ops": list(self.ops)}

    def model_config(self):
        """The :class:`~fastweights.models.ModelConfig` of this run (token head for code execution,
        sequence head for ListOps; default positional encoding)."""
        from ..models import ModelConfig
        from ..tasks import CODE_EXEC_SRC_VOCAB, CODE_EXEC_TGT_VOCAB, LISTOPS_NUM_CLASSES, LISTOPS_VOCAB

        if self.task == "code-exec":
            vocab, head, classes = len(CODE_EXEC_SRC_VOCAB), "token", len(CODE_EXEC_TGT_VOCAB)
        else:
            vocab, head, classes = len(LISTOPS_VOCAB), "sequence", LISTOPS_NUM_CLASSES
        return ModelConfig(layer=self.model, vocab_size=vocab, d_model=self.d_model, num_layers=self.num_layers,
                           num_heads=self.num_heads, dropout=float(self.dropout), head=head, num_classes=classes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        if not isinstance(data, dict):
            raise ValueError(f"a train config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown train config field(s): {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"
