"""Formal-language recognition runs (``fastweights train formal``): the config, the training task and evaluation.

``train_formal(cfg)`` trains one :class:`FormalConfig` into ``cfg.out`` on the common run path (run directory,
checkpoints, ``--resume``, NaN stop, SIGTERM, time budget, TensorBoard, curves: :class:`.driver.StepLoop`), with
the supervised loop's data position and sampler (:class:`.loop._SupervisedTask`) and this module's objective.

The objective. The model (token head, ``len(alphabet) + 1`` outputs: the alphabet, then ``$``) predicts after each
symbol the set of symbols that can follow (:mod:`fastweights.tasks.formal`): one sigmoid per class, the binary
cross-entropy summed over the classes and averaged over positions. A class is predicted where its logit is
above 0. A position is right when its whole set is; a string is right when every position is. ``acc`` is the
fraction of right strings (the paper's accuracy), ``pos_acc`` that of right positions.

Validation scores both the valid split (lengths of training) and the long split (``long_acc``, ``long_loss``: the
test split, lengths 51-100), as the authors' code does with its "valid" and "valid2". Following that code, the
best checkpoint is the one with the highest mean of ``acc`` and ``long_acc`` (then the lower mean loss), and the
run stops once that mean reaches ``stop_at_accuracy`` (1.0: both splits at 100%; the summary says
``"stopped": "accuracy 1 reached"``) or at its epoch/step limit. The long split thus doubles as the paper's
validation set; :func:`evaluate_formal_run` of the best checkpoint on ``test`` reports it.
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .common import init_distributed
from .config import ModelRunConfig, TrainConfig, check_model
from .driver import BatchLoss, StepLoop, distributed, release_run, seeded_model_and_optimizer, start_run
from .driver import write_run_config
from .loop import DATA, TrainError, _SupervisedTask, kept_evaluation
from .options import ConfigError, option, redeclare

DEFAULT_EPOCHS = 300
COUNT_KEYS = ("loss_count", "positions", "pos_correct", "strings", "correct")


def _languages():
    from ..tasks.formal import LANGUAGES

    return tuple(LANGUAGES)


@dataclass
class FormalConfig(ModelRunConfig):
    """One formal-language recognition run (next-symbol-set prediction; see :mod:`fastweights.tasks.formal`).

    Task and data:
        language: one of the eight languages (``parity`` by default).
        lengths, test_lengths: ``[MIN, MAX]`` word lengths of train/valid (1-50) and of the long test split
            (51-100); n for counter-2 and counter-3.
        sizes: train / valid / test words (10,000 / 2,000 / 2,000).
        data_seed: seed of the generated splits (kept apart from ``seed``).
        data_dir: read the splits from a ``fastweights data formal`` directory instead (its language must be
            ``language``; its lengths, sizes and seed are recorded in the run's config).

    The paper's setup (Irie, Csordás and Schmidhuber, EMNLP 2023; the authors' code, IDSIA/fwp-formal-lang,
    ``main.py`` and its README): no positional encoding (``--remove_pos_enc``), dropout 0, Adam with betas
    (0.9, 0.995) (and eps 1e-9, here torch's 1e-8), no gradient clipping (``--clip`` defaults to 0), at most
    300 epochs, a validation every 50 steps (``--report_every 50``), stop once the mean of the valid and the
    long-split accuracy reaches 100%, the best checkpoint by that mean. Their defaults otherwise are 2 layers,
    width 512, 8 heads, FF 4x, batch 64, learning rate 1e-4; the per-model, per-language layers, width, heads,
    batch and learning rate are in the paper's appendix tables, which could not be read from here (only the
    code and README were found), so they are not reproduced. The defaults below are a small model that a CPU
    trains in minutes: width 64, 2 layers, 4 heads, batch 32, learning rate 1e-3, and a validation every 200 steps
    (every 50, scoring 4,000 strings, would take most of a CPU run's time); see docs/formal.md.
    Their loss differs too: they treat each target set as one class (softmax cross-entropy over the sets seen
    in training); here each symbol of the set is its own sigmoid (binary cross-entropy), as the issue asks.

    stop_at_accuracy: stop once the mean of ``acc`` and ``long_acc`` at a validation reaches it (None: never;
    may change on resume). ``steps`` or ``epochs`` (default 300 epochs) cap the run; the other fields are those
    of every model run (:class:`~fastweights.train.config.ModelRunConfig`).
    """

    kind: typing.ClassVar[str] = "formal"
    command_field: typing.ClassVar[str] = "task"

    task: str = option("formal", "the task", choices=("formal",), cli=False)
    language: str = option("parity", "the language", choices=_languages, metavar="LANGUAGE")
    lengths: list = option([1, 50], "MIN,MAX word length of train and valid (n for counter-2/3)", item=int, length=2,
                           low=1, high=1000, metavar="MIN,MAX")
    test_lengths: list = option([51, 100], "MIN,MAX word length of the long test split (n for counter-2/3)",
                                item=int, length=2, low=1, high=1000, metavar="MIN,MAX")
    sizes: list = option([10000, 2000, 2000], "TRAIN,VALID,TEST words to generate", item=int, length=3, low=1,
                         high=10**6, metavar="TRAIN,VALID,TEST")
    data_seed: int = option(0, "seed of the generated splits", low=0, high=2**32 - 1)
    data_dir: str | None = option(None, "read the splits from a 'fastweights data formal' directory instead of "
                                        "generating them", flag="--data", metavar="DIR")
    pos_encoding: str = option("none", "positional encoding (the paper: none)", choices=("none", "sinusoidal"))
    d_model: int | None = redeclare(ModelRunConfig, "d_model", 64)
    num_heads: int | None = redeclare(ModelRunConfig, "num_heads", 4)
    dropout: float | None = redeclare(ModelRunConfig, "dropout", 0.0, "dropout (the paper: 0)")
    batch_size: int | None = redeclare(ModelRunConfig, "batch_size", 32)
    lr: float | None = redeclare(ModelRunConfig, "lr", 1e-3)
    grad_clip: float | None = redeclare(ModelRunConfig, "grad_clip", 0.0,
                                        "max gradient norm (0, none or off: no clipping, the paper's)")
    eval_interval: int = redeclare(ModelRunConfig, "eval_interval", 200)
    bucket_batches: int = redeclare(TrainConfig, "bucket_batches", 50)
    steps: int | None = redeclare(ModelRunConfig, "steps", None, "optimizer steps (default: --epochs)")
    epochs: int | None = option(None, f"epochs instead of --steps (default {DEFAULT_EPOCHS}, the paper's)", low=1,
                                high=10**7, resumable=True)
    stop_at_accuracy: float | None = option(1.0, "stop once the mean of the valid and long-split string accuracy "
                                                 "reaches it at a validation ('off': never)", low=0, high=1,
                                            resumable=True, none_words=("none", "off"))

    def resolve(self) -> None:
        if self.steps is None and self.epochs is None:
            self.epochs = DEFAULT_EPOCHS

    def check(self) -> None:
        from ..tasks.formal import FormalDataError, check_request

        self.check_schedule()
        if self.data_dir is None:
            try:
                check_request(self.language, self.lengths, self.test_lengths, self.sizes)
            except FormalDataError as e:
                raise ConfigError(e.field, e.detail) from None
            if self.batch_size > self.sizes[0]:
                raise ConfigError("batch_size", f"batch_size ({self.batch_size}) is larger than the training split "
                                                f"({self.sizes[0]} words)")
        check_model(self, self.model_config)

    def task_options(self) -> dict:
        return {"language": self.language, "lengths": list(self.lengths), "test_lengths": list(self.test_lengths)}

    def model_config(self):
        """The :class:`~fastweights.models.ModelConfig`: inputs the alphabet (and the pad), a token head with one
        output per symbol and ``$``, ``pos_encoding`` (none by default, for every layer)."""
        from ..models import ModelConfig
        from ..tasks.formal import LANGUAGES

        lang = LANGUAGES[self.language]
        return ModelConfig(layer=self.model, layer_options=dict(self.layer_options), vocab_size=len(lang.alphabet) + 1,
                           d_model=self.d_model, num_layers=self.num_layers, num_heads=self.num_heads,
                           dropout=float(self.dropout), head="token", num_classes=len(lang.classes),
                           pos_encoding=self.pos_encoding)

    def default_out(self) -> str:
        return f"runs/formal-{self.language}-{self.model}-s{self.seed}"


# ------------------------------------------------------------------------------------------ data

class FormalSplit(torch.utils.data.Dataset):
    """One split as ids: item ``i`` is ``(ids, multi-hot target rows)``."""

    task = "formal"

    def __init__(self, language: str, examples):
        from ..tasks.formal import encode

        self.language = language
        self.ids, self.targets = encode(language, examples)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i], self.targets[i]


def collate(items) -> dict:
    """Right-pads with id 0: ``{"inputs": [B, T] long, "targets": [B, T, C] float, "lengths": [B]}``."""
    lengths = torch.tensor([len(x) for x, _ in items], dtype=torch.long)
    width = int(lengths.max()) if items else 0
    classes = len(items[0][1][0]) if items else 0
    inputs = torch.zeros(len(items), width, dtype=torch.long)
    targets = torch.zeros(len(items), width, classes)
    for b, (x, y) in enumerate(items):
        inputs[b, :len(x)] = torch.tensor(x, dtype=torch.long)
        targets[b, :len(y)] = torch.tensor(y, dtype=torch.float32)
    return {"inputs": inputs, "targets": targets, "lengths": lengths}


def _loader(dataset: FormalSplit, sampler) -> torch.utils.data.DataLoader:
    """As :func:`.data.make_loader`, with this task's padding: main process, its own generator."""
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=0, collate_fn=collate,
                                       generator=torch.Generator().manual_seed(0))


def objective(logits: torch.Tensor, batch: dict) -> dict:
    """Summed loss (binary cross-entropy summed over classes, per real position) and the counts of one batch:
    ``positions``, ``pos_correct`` (the whole set right), ``strings``, ``correct`` (every position right)."""
    targets, lengths = batch["targets"], batch["lengths"]
    real = torch.arange(targets.shape[1], device=lengths.device)[None, :] < lengths[:, None]
    loss_sum = F.binary_cross_entropy_with_logits(logits[real].float(), targets[real], reduction="sum")
    with torch.no_grad():
        right = ((logits > 0) == (targets > 0.5)).all(dim=-1) & real
        strings = (right | ~real).all(dim=1)
    return {"loss_sum": loss_sum, "loss_count": int(real.sum()), "positions": int(real.sum()),
            "pos_correct": int(right.sum()), "strings": int(targets.shape[0]), "correct": int(strings.sum())}


def summarize(totals: dict) -> dict:
    return {"loss": totals["loss_sum"] / max(totals["loss_count"], 1),
            "acc": totals["correct"] / max(totals["strings"], 1),
            "pos_acc": totals["pos_correct"] / max(totals["positions"], 1)}


@torch.no_grad()
def evaluate(model, dataset: FormalSplit, batch_size: int, device) -> dict:
    """Loss, string and position accuracy of ``model`` on a whole split (eval mode, restored after)."""
    was = model.training
    model.eval()
    totals = {"loss_sum": 0.0, **{k: 0 for k in COUNT_KEYS}}
    try:
        order = sorted(range(len(dataset)), key=lambda j: len(dataset.ids[j]))  # similar lengths: little padding
        for i in range(0, len(order), batch_size):
            batch = collate([dataset[j] for j in order[i:i + batch_size]])
            batch = {k: v.to(device) for k, v in batch.items()}
            obj = objective(model(batch["inputs"])[0], batch)
            totals["loss_sum"] += float(obj["loss_sum"])
            for k in COUNT_KEYS:
                totals[k] += obj[k]
    finally:
        model.train(was)
    return summarize(totals)


def load_data(cfg: FormalConfig, run_dir: Path, write: bool):
    """The run's splits: ``RUN_DIR/data`` if it exists, else read from ``cfg.data_dir`` or generated; written to
    ``RUN_DIR/data`` on the first start, so resume and eval read exactly what training saw."""
    from ..tasks.formal import load_formal_splits, make_formal_splits, write_formal_splits

    local = run_dir / DATA
    if (local / "meta.json").exists():
        splits = load_formal_splits(local)
    elif cfg.data_dir is not None:
        splits = load_formal_splits(cfg.data_dir)
    else:
        splits = make_formal_splits(cfg.language, cfg.lengths, cfg.test_lengths, cfg.sizes, cfg.data_seed)
    if splits.meta.get("language") != cfg.language:
        raise ConfigError("data_dir", f"data_dir {cfg.data_dir or local} holds {splits.meta.get('language')!r} "
                                      f"words, not {cfg.language!r} (give --language "
                                      f"{splits.meta.get('language')})")
    if write and not (local / "meta.json").exists():
        write_formal_splits(local, splits)
    return splits


def _config_from_data(cfg: FormalConfig, meta: dict) -> FormalConfig:
    """Records the lengths, sizes and seed of a ``--data`` directory in the resolved config."""
    opts, sizes = meta.get("options", {}), meta.get("sizes", {})
    try:
        return cfg.replace(lengths=list(opts["lengths"]), test_lengths=list(opts["test_lengths"]),
                           sizes=[int(sizes["train"]), int(sizes["valid"]), int(sizes["test"])],
                           data_seed=int(meta.get("seed", cfg.data_seed)))
    except (KeyError, TypeError, ValueError):
        return cfg


# ------------------------------------------------------------------------------------------ training

def train_formal(cfg: FormalConfig, resume: bool = False, progress: bool | None = None) -> dict:
    """Runs ``cfg`` into ``cfg.out``; with ``resume`` continues from its last checkpoint. Returns the summary
    (also ``RUN_DIR/summary.json``). Raises ``ValueError`` (bad run directory, data, checkpoint) and
    :class:`~.runs.RunError` (divergence)."""
    dist, rank, world = init_distributed()
    try:
        run_dir, device = start_run(cfg, resume, dist, rank, world)
        splits = load_data(cfg, run_dir, write=rank == 0)
        if cfg.data_dir is not None:
            cfg = _config_from_data(cfg, splits.meta)
        write_run_config(run_dir, cfg, rank, dist)
        sets = {s: FormalSplit(cfg.language, splits[s]) for s in ("train", "valid", "test")}
        model, opt = seeded_model_and_optimizer(cfg, rank, device)
        warm = cfg.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
        task = _FormalTask(cfg, model, sets, device, rank, world)
        loop = StepLoop(task, cfg, run_dir, model, opt, sched, dist, rank, world, device)
        if resume:
            loop.resume()
        task.net = distributed(task.net, dist, device)
        return loop.run(progress)
    finally:
        release_run(cfg.out)
        if dist is not None and dist.is_initialized():
            dist.destroy_process_group()


def _score(m: dict) -> list:
    """Higher is better: the mean string accuracy of the valid and long splits, then the lower mean loss."""
    return [(m["acc"] + m["long_acc"]) / 2, -(m["loss"] + m["long_loss"]) / 2]


class _FormalTask(_SupervisedTask):
    """The supervised loop's data position, sampler, scaling and checkpoint state, with the next-symbol-set
    objective, validation on the valid and the long split, and the stop at ``stop_at_accuracy``."""

    def __init__(self, cfg: FormalConfig, model, sets: dict, device, rank: int, world: int):
        super().__init__(cfg, model, sets["train"], sets["valid"], device, rank, world)
        self.name = "formal"
        self.loader = _loader(sets["train"], self.sampler)
        self.test_set = sets["test"]
        self._last: dict | None = None  # the latest validation

    def forward(self, batch) -> BatchLoss:
        obj = objective(self.net(batch["inputs"])[0], batch)
        sums = {**{k: obj[k] for k in COUNT_KEYS}, "tokens": int(batch["lengths"].sum()), "steps": 1}
        return BatchLoss(obj["loss_sum"], obj["loss_count"], sums)

    def zero_accum(self) -> dict:
        return {"loss_sum": 0.0, "tokens": 0, "steps": 0, **{k: 0 for k in COUNT_KEYS}}

    def train_metrics(self, totals: dict) -> dict:
        return summarize(totals)

    def validate(self) -> dict:
        bs = self.cfg.eval_batch_size
        valid = evaluate(self.model, self.valid_set, bs, self.device)
        long = evaluate(self.model, self.test_set, bs, self.device)
        self._last = {**valid, "long_loss": long["loss"], "long_acc": long["acc"], "long_pos_acc": long["pos_acc"]}
        return self._last

    def beats(self, metrics: dict, best: dict) -> bool:
        return _score(metrics) > best["score"]

    def best_record(self, step: int, metrics: dict) -> dict:
        return {"step": step, "score": _score(metrics), "metrics": metrics}

    def finished(self) -> str | None:
        goal = self.cfg.stop_at_accuracy
        if goal is None or self._last is None or _score(self._last)[0] < goal:
            return None
        return f"accuracy {goal:g} reached"

    # -- presentation
    def run_log_options(self) -> dict:
        return {"formatter": _fmt_info, "plotter": _plot}

    def describe(self) -> str:
        cfg, params = self.cfg, sum(p.numel() for p in self.model.parameters())
        return (f"{cfg.language} (train {cfg.lengths[0]}-{cfg.lengths[1]}, long {cfg.test_lengths[0]}-"
                f"{cfg.test_lengths[1]}), model {cfg.model} ({params:,} parameters), {self.total} steps of batch "
                f"{cfg.batch_size}{f' on {self.world} processes' if self.world > 1 else ''}"
                f"{f' within {cfg.time_budget_minutes:g} min' if cfg.time_budget_minutes else ''}"
                f"{f', stop at accuracy {cfg.stop_at_accuracy:g}' if cfg.stop_at_accuracy is not None else ''}")

    def describe_best(self, best: dict) -> str:
        return _fmt_info(best["metrics"])


def _fmt_info(info: dict) -> str:
    parts = []
    if info.get("loss") is not None:
        parts.append(f"loss {info['loss']:.4f}")
    if info.get("acc") is not None:
        parts.append(f"acc {100 * info['acc']:.1f}%")
    if info.get("long_acc") is not None:
        parts.append(f"long acc {100 * info['long_acc']:.1f}%")
    if info.get("tokens_per_s"):
        parts.append(f"{info['tokens_per_s']:,.0f} tok/s")
    return " | ".join(parts)


def _plot(history: list, png, title: str) -> None:
    """The loss and the string accuracy against steps: train, valid and the long split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split, key, loss_key, style, label in (("train", "acc", "loss", "-", "train"),
                                               ("valid", "acc", "loss", "o-", "valid"),
                                               ("valid", "long_acc", "long_loss", "s-", "long")):
        recs = [r for r in history if r.get("split") == split and r.get(key) is not None]
        if recs:
            steps = [r["step"] for r in recs]
            ax_loss.plot(steps, [r.get(loss_key) for r in recs], style, label=label, markersize=3)
            ax_acc.plot(steps, [r[key] for r in recs], style, label=label, markersize=3)
    ax_loss.set_ylabel("loss (nats per position)")
    ax_loss.set_yscale("log")
    ax_acc.set_ylabel("string accuracy")
    ax_acc.set_ylim(0, 1)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ evaluation

def load_formal_config(run_dir) -> FormalConfig:
    from .runs import load_config

    return load_config(run_dir, expect="formal")


def evaluate_formal_run(run_dir: str | os.PathLike, split: str = "test", which: str = "best",
                        cache: bool = False) -> dict:
    """Loss, string accuracy ``acc`` and position accuracy ``pos_acc`` of a run's ``which`` checkpoint (``"best"``
    or ``"last"``) on ``split`` (``test``: the long split). Kept in ``RUN_DIR/evals.json`` as
    :func:`.loop.evaluate_run` keeps its results; with ``cache`` a kept result of the same checkpoint and code
    is returned without evaluating again."""
    cfg = load_formal_config(run_dir)

    def score(model, ptr) -> dict:
        data = FormalSplit(cfg.language, load_data(cfg, Path(run_dir), write=False)[split])
        metrics = evaluate(model, data, cfg.eval_batch_size, torch.device("cpu"))
        lengths = [len(x) for x in data.ids]
        return {"run_dir": str(run_dir), "task": "formal", "language": cfg.language, "model": cfg.model,
                "options": cfg.task_options(), "split": split, "checkpoint": which, "step": ptr["step"],
                "examples": len(data), "min_length": min(lengths), "max_length": max(lengths), **metrics}

    return kept_evaluation(run_dir, cfg, split, which, cache, score)


__all__ = ["FormalConfig", "train_formal", "evaluate_formal_run", "evaluate", "objective", "collate", "FormalSplit",
           "TrainError"]
