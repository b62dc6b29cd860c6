"""The registry of run kinds and the one path every run takes: configure, train, resume, load, evaluate.

A run kind (:class:`RunKind`) names its config class (a :class:`~fastweights.train.options.RunConfig`), its
training and evaluation functions and its ``train`` sub-commands (each fixing the config's
``command_field``: the supervised ``task``, the RL ``env``). A new kind of run is one entry in :data:`KINDS`.

Every ``config.json`` records its ``kind`` and ``format``; paths inside it (``data_dir``, ``train_file``,
``cache_dir``) are relative to the run directory, and ``out`` is the run directory itself, so a run can be
moved or copied and resumed from anywhere. Runs saved before the format existed (no ``format``) are read as
they were written: their kind is inferred (``task`` code-exec/listops: supervised, lm: lm, ``kind`` rl: rl)
and their relative paths are taken from the working directory; ``fastweights migrate RUN_DIR`` rewrites
them in the current format.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

from .options import PATH_FIELDS, ConfigError, resume_changes

CONFIG = "config.json"
FORMAT = 2


class RunError(RuntimeError):
    """A run cannot go on (a NaN/inf loss or gradient, a dead actor): the message says why and what was kept."""


@dataclass(frozen=True)
class RunKind:
    name: str
    config: str  # "module:Class" of its RunConfig
    train: str  # "module:function(cfg, resume=False, progress=None) -> summary"
    evaluate: str  # "module:function(run_dir, ...) -> dict"
    commands: dict  # train sub-command -> its help; the sub-command's name is the command_field's value
    help: str

    def config_class(self) -> type:
        return _load(self.config)

    def train_fn(self) -> Callable:
        return _load(self.train)

    def evaluate_fn(self) -> Callable:
        return _load(self.evaluate)


def _load(ref: str):
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


KINDS: dict[str, RunKind] = {
    "supervised": RunKind(
        "supervised", "fastweights.train.config:TrainConfig", "fastweights.train.loop:train",
        "fastweights.train.loop:evaluate_run",
        {"code-exec": "code execution: print accuracy and sequence accuracy",
         "listops": "sequential ListOps: accuracy"},
        "an algorithmic task (the paper's recipe by default)"),
    "lm": RunKind(
        "lm", "fastweights.train.lm_config:LMConfig", "fastweights.train.lm:train_lm",
        "fastweights.train.lm:evaluate_lm_run",
        {"lm": "word-level language model on WikiText-103 (adaptive softmax, tied embeddings, warm-up + cosine)"},
        "language modelling"),
    "rl": RunKind(
        "rl", "fastweights.rl.config:RLConfig", "fastweights.rl.impala:train",
        "fastweights.rl.evaluate:evaluate_rl_run",
        {"atari": "IMPALA on an Atari game (the paper's recipe; needs ale-py)",
         "memory": "IMPALA on the cue-recall memory environment (seconds to minutes on a CPU)"},
        "reinforcement learning (IMPALA)"),
    "formal": RunKind(
        "formal", "fastweights.train.formal:FormalConfig", "fastweights.train.formal:train_formal",
        "fastweights.train.formal:evaluate_formal_run",
        {"formal": "formal-language recognition: next-symbol sets of parity, Dyck-1, counters, ... (string accuracy "
                   "on the training lengths and on longer strings)"},
        "formal-language recognition"),
}


def kind_for_command(command: str) -> RunKind:
    for kind in KINDS.values():
        if command in kind.commands:
            return kind
    raise ValueError(f"no run kind has the train command {command!r}")


def kind_of_record(data: dict) -> str | None:
    """The kind a ``config.json`` object records, or infers for a run saved before kinds were recorded."""
    if not isinstance(data, dict):
        return None
    if data.get("kind") in KINDS:
        return data["kind"]
    task = data.get("task")
    if task in ("code-exec", "listops"):
        return "supervised"
    if task == "lm":
        return "lm"
    return None


def read_record(run_dir) -> dict:
    """The JSON object of ``RUN_DIR/config.json`` (one-line ``ValueError`` otherwise)."""
    path = Path(run_dir) / CONFIG
    if not Path(run_dir).is_dir():
        raise ValueError(f"{run_dir}: no such run directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise ValueError(f"{run_dir}: not a training run (no readable {CONFIG})") from None
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a run config (a JSON object is expected)")
    return data


def run_kind(run_dir) -> str:
    """The kind of the run in ``run_dir`` (``ValueError`` if it is not a run)."""
    kind = kind_of_record(read_record(run_dir))
    if kind is None:
        raise ValueError(f"{run_dir}: {CONFIG} names no known run kind ({', '.join(KINDS)})")
    return kind


def require_kind(run_dir, *allowed: str, what: str) -> str:
    """The run's kind if it is one of ``allowed``, else a one-line ``ValueError`` naming its kind."""
    kind = run_kind(run_dir)
    if kind not in allowed:
        names = " or ".join({"supervised": "an algorithmic-task", "lm": "a language-model",
                             "rl": "an RL"}.get(k, f"a {k}") for k in allowed)
        raise ValueError(f"{run_dir} is {_article(kind)} run; {what} needs {names} run")
    return kind


def _article(kind: str) -> str:
    return {"supervised": "an algorithmic-task (supervised)", "lm": "a language-model", "rl": "an RL"}.get(kind,
                                                                                                      f"a {kind}")


def load_config(run_dir, expect: str | None = None):
    """The saved config of the run in ``run_dir``, its paths resolved and ``out`` the directory itself.
    ``expect``: the kind the caller needs (a one-line error names the run's kind otherwise)."""
    data = read_record(run_dir)
    kind = kind_of_record(data)
    if kind is None:
        raise ValueError(f"{run_dir}: {CONFIG} names no known run kind ({', '.join(KINDS)})")
    if expect is not None and kind != expect:
        raise ValueError(f"{run_dir} is {_article(kind)} run, not {_article(expect)} run")
    cls = KINDS[kind].config_class()
    data = dict(data)
    if data.get("format", 1) >= 2:
        for name in PATH_FIELDS - {"out"}:
            if isinstance(data.get(name), str) and not os.path.isabs(data[name]):
                data[name] = os.path.normpath(os.path.join(str(run_dir), data[name]))
    data["out"] = str(run_dir)
    try:
        return cls.from_dict(data)
    except ValueError as e:
        raise ValueError(f"{Path(run_dir) / CONFIG}: {e}") from None


def config_record(cfg, run_dir) -> dict:
    """What ``config.json`` holds for ``cfg``: its fields, ``kind`` and ``format``, and paths relative to
    ``run_dir``."""
    data = {"kind": cfg.kind, "format": FORMAT, **cfg.to_dict()}
    base = os.path.abspath(run_dir)
    data["out"] = "."
    for name in PATH_FIELDS - {"out"}:
        if isinstance(data.get(name), str):
            data[name] = os.path.relpath(os.path.abspath(os.path.expanduser(data[name])), base)
    return data


def resume_config(run_dir, overrides: dict, expect: str | None = None):
    """The saved config of ``run_dir`` with ``overrides`` applied; any override of a field that ``--resume``
    may not change (see its declaration) raises :class:`~fastweights.train.options.ConfigError`. ``expect``:
    the kind the caller needs (a one-line error names the run's kind otherwise)."""
    saved = load_config(run_dir, expect=expect)
    overrides = {k: v for k, v in overrides.items() if k != "out"}
    changes = resume_changes(saved, overrides)
    changes = saved.resume_fixups(changes)
    cfg = saved.replace(**changes) if changes else saved
    cfg.preflight(resume=True)
    return cfg


def new_config(command: str, given: dict):
    """A fresh config for ``train COMMAND`` from the given fields (``out`` defaults to the kind's name)."""
    kind = kind_for_command(command)
    cls = kind.config_class()
    if cls.command_field is not None:
        given = {**given, cls.command_field: command}
    cfg = cls(**given)
    if "out" not in given:
        cfg = cfg.replace(out=cfg.default_out())
    cfg.preflight(resume=False)
    return resolve_precision(cfg)


def resolve_precision(cfg):
    """``cfg`` with ``precision="auto"`` replaced by what it picks here (so the run records, and a resume keeps,
    the precision it trained in)."""
    if getattr(cfg, "precision", "fp32") != "auto":
        return cfg
    import torch

    from .precision import resolve

    return cfg.replace(precision=resolve("auto", "cuda" if torch.cuda.is_available() else "cpu"))


def train(cfg, resume: bool = False, progress: bool | None = None) -> dict:
    """Trains (or with ``resume`` continues) the run ``cfg`` describes, whatever its kind."""
    return KINDS[cfg.kind].train_fn()(resolve_precision(cfg), resume=resume, progress=progress)


def evaluate(run_dir, **options) -> dict:
    """Evaluates the run in ``run_dir`` with its kind's evaluation (options as that function takes them)."""
    return KINDS[run_kind(run_dir)].evaluate_fn()(run_dir, **options)


def migrate(run_dir) -> dict:
    """Rewrites ``RUN_DIR/config.json`` in the current format (kind, format, paths relative to the run, no
    ``cache_dir``: the machine's cache is chosen where the run is evaluated or resumed); legacy relative paths
    are taken from the working directory. Returns what changed (empty: nothing to do)."""
    from .checkpoint import write_json_atomic

    data = read_record(run_dir)
    kind = kind_of_record(data)
    if kind is None:
        raise ValueError(f"{run_dir}: {CONFIG} names no known run kind ({', '.join(KINDS)})")
    cfg = load_config(run_dir)
    if getattr(cfg, "cache_dir", None) is not None:  # a machine's cache; evaluation never uses a run's own
        cfg = cfg.replace(cache_dir=None)
    new = config_record(cfg, run_dir)  # legacy relative paths were read relative to the working directory
    changed = {k: (data.get(k), new[k]) for k in new if data.get(k) != new[k]}
    changed.update({k: (data[k], None) for k in data if k not in new})
    if changed:
        write_json_atomic(Path(run_dir) / CONFIG, new)
    return changed


def declared_fields(cls) -> list:
    """The declared fields of a config class, in order."""
    from .options import opt_of

    return [f for f in fields(cls) if opt_of(f) is not None]


__all__ = ["KINDS", "RunKind", "RunError", "ConfigError", "load_config", "resume_config", "new_config", "train",
           "evaluate", "migrate", "run_kind", "require_kind", "config_record"]
