"""``TrainConfig``: every knob of a supervised training run, declared once (see :mod:`.options`).

The fields every run kind shares are declared in :class:`~fastweights.train.options.RunConfig`, those the
supervised and language-model runs share (the model and the optimiser) in :class:`ModelRunConfig`, and the
algorithmic tasks' own here in :class:`TrainConfig`. A bad value raises :class:`TrainConfigError` (the one
:class:`~fastweights.train.options.ConfigError`, a ``ValueError``) whose message names the field and the
value, and whose ``field`` attribute names the field (the command line maps it back to its flag).
Model-shape fields are also checked by building the :class:`~fastweights.models.ModelConfig` they imply.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

from .options import NONE_WORDS, ConfigError, RunConfig, option, redeclare

TASKS = ("code-exec", "listops")
LOSS_POSITIONS = ("prints", "all")
TrainConfigError = ConfigError


def _layer_names():
    from ..layers import layer_names

    return layer_names()


def _depth_conventions():
    from ..tasks.listops import DEPTH_CONVENTIONS

    return DEPTH_CONVENTIONS


def _listops_ops():
    from ..tasks.listops import ALL_OPS

    return ALL_OPS


def check_model(cfg, model_config) -> None:
    """Builds ``cfg``'s :class:`~fastweights.models.ModelConfig` and one of its layers (on the meta device, so
    nothing is allocated), turning their errors into :class:`ConfigError` naming the run's field, so a bad
    shape or layer option is found before anything is written."""
    import torch

    from ..layers import build_layer
    from ..models import ConfigError as ModelConfigError

    try:
        mc = model_config()
    except ModelConfigError as e:
        name = {"layer": "model", "layer_options": "layer_options", "adaptive_softmax": "cutoffs"}.get(e.field,
                                                                                                       e.field)
        raise ConfigError(name, str(e).replace("layer must", "model must", 1)) from None
    if mc.layer_options:
        options = dict(mc.layer_options, **({"head_dim": mc.head_dim} if mc.head_dim is not None else {}))
        try:
            with torch.device("meta"):
                build_layer(mc.layer, d_model=mc.d_model, num_heads=mc.num_heads, **options)
        except (ValueError, TypeError) as e:
            raise ConfigError("layer_options", f"layer {mc.layer!r}: {e}") from None


@dataclass
class ModelRunConfig(RunConfig):
    """The model and optimiser fields that the supervised and language-model runs share."""

    model: str = option("delta-rnn", "layer name, see 'fastweights models'", choices=_layer_names,
                        metavar="LAYER")
    d_model: int | None = option(128, "model width", low=1, high=65536)
    num_layers: int | None = option(2, "blocks", low=1, high=1024, flag="--layers")
    num_heads: int | None = option(4, "heads", low=1, high=4096, flag="--heads")
    dropout: float | None = option(0.1, "dropout", low=0, high=1, high_open=True)
    steps: int | None = option(None, "optimizer steps", low=1, high=10**10, resumable=True)
    batch_size: int | None = option(64, "global batch", low=1, high=2**20)
    lr: float | None = option(3e-4, "Adam learning rate", low=0, low_open=True, high=10)
    betas: list | None = option([0.9, 0.995], "Adam betas B1,B2", item=float, length=2, low=0, high=1,
                                high_open=True, metavar="B1,B2")
    warmup_steps: int | None = option(0, "linear warm-up steps", low=0, high=10**10, flag="--warmup")
    grad_clip: float | None = option(1.0, "max gradient norm (0, none or off: no clipping)", low=0, high=1e9,
                                     words=(("none", 0.0), ("off", 0.0)))
    eval_interval: int = option(200, "steps between validations and checkpoints", low=1, resumable=True)
    eval_batch_size: int = option(256, "batch of evaluation", low=1, high=2**20, resumable=True)


    def resume_fixups(self, changes: dict) -> dict:
        """A new ``steps`` clears ``epochs`` and a new ``epochs`` clears ``steps`` (kinds with epochs)."""
        if hasattr(self, "epochs"):
            if "steps" in changes:
                changes.setdefault("epochs", None)
            if "epochs" in changes:
                changes.setdefault("steps", None)
        return changes

    def check_schedule(self) -> None:
        """The model and optimiser fields are given, and the length: ``steps`` or ``epochs`` (where the kind
        has epochs), not both, with a warm-up shorter than ``steps``."""
        for name in ("d_model", "num_layers", "num_heads", "dropout", "batch_size", "lr", "betas", "warmup_steps"):
            if getattr(self, name) is None:
                raise ConfigError(name, f"{name} is required, got None")
        epochs = getattr(self, "epochs", None)
        if self.steps is not None and epochs is not None:
            raise ConfigError("steps", f"give steps or epochs, not both (steps={self.steps!r}, epochs={epochs!r})")
        if self.steps is not None and self.warmup_steps >= self.steps > 1:
            raise ConfigError("warmup_steps", f"warmup_steps must be below steps ({self.steps}), "
                                              f"got {self.warmup_steps!r}")


@dataclass
class TrainConfig(ModelRunConfig):
    """One supervised run on an algorithmic task.

    Task and data:
        task: ``"code-exec"`` or ``"listops"``.
        num_vars, length: code execution: variables (3 or 5) and statements per program (100).
        depth, ops: ListOps: exact depth (10) and operators (MIN, MAX, FIRST).
        depth_convention: what ``depth`` counts: ``"nesting"`` (the default, the maximum bracket nesting) or
            ``"reference"`` (the leaves counted as a level, as the reference generators' ``--only_depth``:
            nesting + 1; see :func:`fastweights.tasks.listops.nesting_depth`). The resolved
            :attr:`nesting_depth` is recorded beside them in the saved config; configs saved before the field
            existed read as ``"nesting"``, which is what their depth meant.
        sizes: examples in train / valid / test (10k / 1k / 1k, as in the paper).
        data_seed: seed of the generated splits (kept apart from ``seed`` so every run sees the same data).
        data_dir: read the splits from this ``fastweights data`` directory instead of generating them
            (the task options above are then taken from its ``meta.json``).

    Model: ``model`` (a layer name), ``layer_options``, ``d_model``, ``num_layers``, ``num_heads``,
    ``dropout``; the positional encoding is the models' default (none for the FWPs and the LSTM).

    Optimisation (the paper's recipe): Adam ``lr`` 3e-4 with ``betas`` (0.9, 0.995), ``batch_size`` 64
    (the global batch; split across processes under DDP), ``grad_clip`` (max global grad norm; None or 0
    disables), ``warmup_steps`` of linear warm-up then a constant rate. Exactly one of ``steps`` and
    ``epochs`` sets the length (neither: ``steps`` = 5000).

    loss_positions (code execution): ``"prints"`` (the default) trains on the executed-print positions
    only, those whose target is a value; ``"all"`` also on every ``_``.

    Bookkeeping: ``seed`` (weights, dropout, data order), ``out`` (the run directory), ``eval_interval``
    (steps between validations, each also saving a checkpoint), ``save_interval`` (extra checkpoints
    between validations; None: only at evaluations), ``log_interval`` (steps between train-metric
    records), ``eval_batch_size``, ``threads`` (torch intra-op threads; None keeps torch's default).

    stop_plateau: a stopping rule (None: off). After each validation at step ``s``, the run stops if its best
    validation (the main accuracy, then the lower loss) is from a step ``b`` with ``s - b >= stop_plateau * s``:
    validation has not improved over the last ``stop_plateau`` of the steps (:meth:`plateau_reason`). The best
    step comes from the checkpoint, so the rule holds across ``--resume``; it may change on resume.

    time_budget_minutes: a time budget (None: no budget), so that runs can be compared at equal CPU time.
    The run ends after the first optimizer step at which the training loop's elapsed time (evaluations and
    checkpoints included; start-up and data generation not), summed across ``--resume`` sessions through
    the checkpoint, exceeds it, with the usual final evaluation and checkpoint; ``steps``/``epochs`` still
    cap the run. It may change on resume.

    budget_clock: what the time budget counts. ``"wall"`` (the default) is wall-clock time; ``"cpu"`` is
    the CPU time of the training process, all its threads summed (``time.process_time``), which stays fair
    when several runs share a machine: a run on 2 threads for 5 minutes spends about 10 CPU-minutes.
    Fixed for the life of a run.
    """

    kind: typing.ClassVar[str] = "supervised"
    command_field: typing.ClassVar[str] = "task"

    task: str = option("code-exec", "the algorithmic task", choices=TASKS, cli=False)
    num_vars: int = option(5, "number of variables, 3 or 5", choices=(3, 5), flag="--vars", commands=("code-exec",))
    length: int = option(100, "statements per program", low=2, high=100_000, commands=("code-exec",))
    depth: int = option(10, "exact depth of every example, counted as --depth-convention says", low=1, high=100,
                        commands=("listops",))
    depth_convention: str = option("nesting", "what --depth counts: 'nesting', the maximum bracket nesting ([MAX 1 2 ] "
                                              "is 1), or 'reference', levels as the reference generators count them, "
                                              "the leaves included (nesting + 1: their --only_depth 16 is nesting 15)",
                                   choices=_depth_conventions, commands=("listops",), metavar="nesting|reference")
    ops: list = option(["MIN", "MAX", "FIRST"], "comma-separated operators", item=str, choices=_listops_ops,
                       commands=("listops",), metavar="OPS")
    sizes: list = option([10000, 1000, 1000], "TRAIN,VALID,TEST examples to generate", item=int, length=3,
                         low=1, high=10**8, metavar="TRAIN,VALID,TEST")
    data_seed: int = option(0, "seed of the generated splits", low=0, high=2**32 - 1)
    data_dir: str | None = option(None, "read the splits from a 'fastweights data' directory instead of "
                                        "generating them", flag="--data", metavar="DIR")
    steps: int | None = redeclare(ModelRunConfig, "steps", None, "optimizer steps (default 5000)")
    epochs: int | None = option(None, "epochs instead of --steps", low=1, high=10**7, resumable=True)
    bucket_batches: int = option(50, "length buckets: sort each pool of N batches of the epoch by length, so batches "
                                     "need little padding (the epoch's examples and the random batch order stay; 0 or "
                                     "1: off)", low=0, high=10**6)
    stop_plateau: float | None = option(None, "stop at a validation whose step is more than FRACTION past the best "
                                              "validation's (no gain over the last FRACTION of the steps, e.g. 0.25; "
                                              "'none': off)", low=0, low_open=True, high=1, high_open=True,
                                        resumable=True, none_words=NONE_WORDS, metavar="FRACTION")
    loss_positions: str = option("prints", "'prints' (executed-print positions) or 'all' tokens",
                                 choices=LOSS_POSITIONS, flag="--loss-on", commands=("code-exec",))

    def resolve(self) -> None:
        if self.steps is None and self.epochs is None:
            self.steps = 5000
        if isinstance(self.ops, (list, tuple)):
            self.ops = [o.strip().upper() if isinstance(o, str) else o for o in self.ops]

    def check(self) -> None:
        from ..tasks.listops import MAX_DEPTH

        if self.num_vars not in (3, 5) or isinstance(self.num_vars, bool):
            raise ConfigError("num_vars", f"num_vars must be 3 or 5, got {self.num_vars!r}")
        if self.depth > MAX_DEPTH:
            raise ConfigError("depth", f"depth must be an int in 1..{MAX_DEPTH}, got {self.depth!r}")
        if self.depth_convention == "reference" and self.depth < 2:
            raise ConfigError("depth", f"depth must be >= 2 with depth_convention 'reference' (it counts the leaves "
                                       f"as a level: 2 is one bracket), got {self.depth!r}")
        if len(set(self.ops)) != len(self.ops) or not self.ops:
            raise ConfigError("ops", f"ops must be distinct names from {list(_listops_ops())}, got {self.ops!r}")
        self.check_schedule()
        if self.data_dir is None and self.batch_size > self.sizes[0]:
            raise ConfigError("batch_size", f"batch_size ({self.batch_size}) is larger than the training split "
                                            f"({self.sizes[0]} examples)")
        check_model(self, self.model_config)

    def plateau_reason(self, step: int, best_step: int | None) -> str | None:
        """Why :attr:`stop_plateau` ends the run at a validation of ``step`` whose best validation so far is
        from ``best_step`` (None: go on). Called by the step loop after each validation."""
        f = self.stop_plateau
        if f is None or best_step is None or step <= 0 or step - best_step < f * step:
            return None
        return f"no validation gain over the last {f:g} of the steps (best at step {best_step})"

    @property
    def nesting_depth(self) -> int:
        """The maximum bracket nesting that ``depth`` means in ``depth_convention``."""
        from ..tasks.listops import nesting_depth

        return nesting_depth(self.depth, self.depth_convention)

    def to_dict(self) -> dict:
        """The fields, with the resolved ``nesting_depth`` recorded after ``depth_convention``."""
        data = super().to_dict()
        out = {}
        for k, v in data.items():
            out[k] = v
            if k == "depth_convention":
                out["nesting_depth"] = self.nesting_depth
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        from .options import config_from_dict

        if isinstance(data, dict) and "bucket_batches" not in data:
            data = {**data, "bucket_batches": 0}  # runs saved before length buckets drew plain batches
        # (runs saved before depth_convention read as "nesting", its default: what their depth meant)
        recorded = data.get("nesting_depth") if isinstance(data, dict) else None
        if isinstance(data, dict) and "nesting_depth" in data:
            data = {k: v for k, v in data.items() if k != "nesting_depth"}  # derived: checked, not a field
        cfg = config_from_dict(cls, data)
        if recorded is not None and recorded != cfg.nesting_depth:
            raise ConfigError("depth", f"nesting_depth {recorded!r} does not match depth {cfg.depth} in the "
                                       f"{cfg.depth_convention} convention (nesting {cfg.nesting_depth})")
        return cfg

    def preflight(self, resume: bool) -> None:
        if resume or self.data_dir is None:  # a run reads its own copy of the splits (RUN_DIR/data)
            return
        from ..tasks.splits import SPLIT_FILES

        missing = [name for name in SPLIT_FILES if not (Path(self.data_dir) / name).is_file()]
        if missing:
            raise ConfigError("data_dir", f"{self.data_dir} is not a 'fastweights data' directory (no "
                                          f"{', '.join(missing)})")

    # ------------------------------------------------------------------------------------------------
    def task_options(self) -> dict:
        """The generator's options of this task (as ``make_splits`` takes them)."""
        if self.task == "code-exec":
            return {"num_vars": self.num_vars, "length": self.length}
        return {"depth": self.depth, "depth_convention": self.depth_convention, "ops": list(self.ops)}

    def model_config(self):
        """The :class:`~fastweights.models.ModelConfig` of this run (token head for code execution,
        sequence head for ListOps; default positional encoding)."""
        from ..models import ModelConfig
        from ..tasks import CODE_EXEC_SRC_VOCAB, CODE_EXEC_TGT_VOCAB, LISTOPS_NUM_CLASSES, LISTOPS_VOCAB

        if self.task == "code-exec":
            vocab, head, classes = len(CODE_EXEC_SRC_VOCAB), "token", len(CODE_EXEC_TGT_VOCAB)
        else:
            vocab, head, classes = len(LISTOPS_VOCAB), "sequence", LISTOPS_NUM_CLASSES
        return ModelConfig(layer=self.model, layer_options=dict(self.layer_options), vocab_size=vocab,
                           d_model=self.d_model, num_layers=self.num_layers, num_heads=self.num_heads,
                           dropout=float(self.dropout), head=head, num_classes=classes)

    def default_out(self) -> str:
        option_ = f"v{self.num_vars}" if self.task == "code-exec" else \
            f"d{self.depth}" + ("-ref" if self.depth_convention == "reference" else "")
        return f"runs/{self.task}-{option_}-{self.model}-s{self.seed}"


