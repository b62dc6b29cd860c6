"""Declared run configurations: every field of a run's config says once what it is, and everything else is
derived from that declaration.

A field is declared with :func:`option` inside a dataclass (a subclass of :class:`RunConfig`)::

    d_model: int = option(128, "model width", low=1, high=65536)
    time_budget_minutes: float | None = option(None, "stop after MINUTES ...", low=0, low_open=True,
                                               resumable=True, none_words=("none", "off"))

From the declaration follow:

* the validation (:func:`validate`, run by every config's ``__post_init__``): the type (from the annotation),
  the bounds, the choices, list lengths; a bad value raises :class:`ConfigError` (a ``ValueError``) whose
  ``field`` attribute names the field, and the command line maps that back to the flag;
* the command line (``fastweights.cli`` builds every ``train`` sub-command from the fields: flag, help text
  with the default, metavar), and the parsing of a flag's text (:func:`parse_text`: the same number
  syntax everywhere, ``1e5`` is a valid integer);
* which fields ``--resume`` may change (``resumable=True``; :func:`resume_changes`);
* reading a saved or hand-written config (:func:`config_from_dict`: unknown keys are one-line errors).

Checks that involve several fields stay in the config's ``check()`` method.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

NONE_WORDS = ("none", "off")
BOOL_WORDS = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False,
              "0": False}
MAX_SEED = 2**63 - 1
PATH_FIELDS = frozenset({"out", "data_dir", "train_file", "cache_dir"})


class ConfigError(ValueError):
    """A bad config value; ``field`` names the field (the command line turns it into the flag)."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True)
class Opt:
    """What a field declares besides its default (kept in the dataclass field's metadata)."""

    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | Callable[[], Any] | None = None  # values, or a function returning them (registries)
    item: type | None = None  # the type of a list's items
    length: int | None = None  # a list's exact length
    resumable: bool = False  # --resume may change it
    cli: bool = True  # a flag of its own (False: filled in by the run, e.g. the vocabulary size)
    flag: str | None = None  # default: --field-name
    metavar: str | None = None
    none_words: tuple = ()  # words that mean None on the command line
    words: tuple = ()  # (word, value) pairs: other words with a meaning on the command line, e.g. ("off", 0.0)
    commands: tuple = ()  # the sub-commands that have this flag (empty: all of the run kind's)
    show_default: bool = True


def option(default, help: str, **kw) -> Any:
    """A dataclass field with its declaration (see the module doc). A list default is copied per instance."""
    return _declared_field(default, Opt(help=help, **kw))


def _declared_field(default, opt: Opt) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"opt": opt})
    return field(default=default, metadata={"opt": opt})


def redeclare(base: type, name: str, default, help: str | None = None, **kw) -> Any:
    """The field ``name`` of ``base`` with another default (and optionally other declaration entries), for a
    config whose run kind uses a shared field with its own default."""
    f = next(f for f in fields(base) if f.name == name)
    return _declared_field(default, dataclasses.replace(f.metadata["opt"], **({"help": help} if help else {}), **kw))


def opt_of(f: dataclasses.Field) -> Opt | None:
    return f.metadata.get("opt")


def flag_of(f: dataclasses.Field) -> str:
    opt = opt_of(f)
    return (opt.flag if opt and opt.flag else "--" + f.name.replace("_", "-"))


# ------------------------------------------------------------------------------------------ types

@dataclass(frozen=True)
class FieldType:
    base: type  # int, float, str, bool, list, dict
    optional: bool


def field_type(cls: type, name: str) -> FieldType:
    hint = _hints(cls)[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if args:
        rest = [a for a in args if a is not type(None)]
        hint = rest[0]
    return FieldType(typing.get_origin(hint) or hint, optional)


_HINTS: dict = {}


def _hints(cls: type) -> dict:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


# ------------------------------------------------------------------------------------------ parsing text

def parse_number(text: str, integer: bool, what: str) -> int | float:
    """``text`` as an int (``integer``: ``100``, ``1e5``, ``2_000`` and ``3.0`` are accepted, ``2.5`` is
    not) or a float; a ValueError naming ``what`` otherwise. The one number syntax of every command."""
    s = str(text).strip()
    try:
        value = float(s)
    except ValueError:
        raise ValueError(f"{what}: expected {'an integer' if integer else 'a number'}, got {text!r}") from None
    if not integer:
        return value
    if not math.isfinite(value) or not value.is_integer():
        raise ValueError(f"{what}: expected an integer, got {text!r}")
    try:
        exact = int(s.replace("_", ""))  # large integers given in full keep every digit
    except ValueError:
        exact = int(value)
    return exact


def parse_bool(text: str, what: str) -> bool:
    value = BOOL_WORDS.get(str(text).strip().lower())
    if value is None:
        raise ValueError(f"{what}: expected on or off, got {text!r}")
    return value


def parse_text(cls: type, name: str, text: str, what: str | None = None):
    """The value of field ``name`` of config class ``cls`` from command-line ``text`` (not yet validated
    against the bounds; :func:`validate` does that)."""
    f = next(f for f in fields(cls) if f.name == name)
    opt, ft = opt_of(f), field_type(cls, name)
    what = what or flag_of(f)
    word = str(text).strip().lower()
    if word in dict(opt.words):
        return dict(opt.words)[word]
    if ft.optional and word in opt.none_words:
        return None
    if ft.base is bool:
        return parse_bool(text, what)
    if ft.base is int:
        return parse_number(text, True, what)
    if ft.base is float:
        return parse_number(text, False, what)
    if ft.base is list:
        parts = [p.strip() for p in str(text).split(",")]
        if parts == [""]:
            raise ValueError(f"{what}: expected a comma-separated list, got {text!r}")
        item = opt.item or str
        if item is str:
            return parts
        if item is bool:
            return [parse_bool(p, what) for p in parts]
        return [parse_number(p, item is int, what) for p in parts]
    return str(text)


def parse_assignment(text: str, what: str) -> tuple[str, Any]:
    """``key=value`` (a layer option) -> ``(key, value)``; the value is an int, a float, on/off/true/false,
    none, or else the text."""
    key, sep, value = str(text).partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise ValueError(f"{what}: expected NAME=VALUE, got {text!r}")
    v = value.strip()
    low = v.lower()
    if low in ("none", "null"):
        return key, None
    if low in ("true", "on", "yes"):
        return key, True
    if low in ("false", "off", "no"):
        return key, False
    for kind in (int, float):
        try:
            return key, kind(v)
        except ValueError:
            pass
    return key, v


# ------------------------------------------------------------------------------------------ validation

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _bounds_text(opt: Opt) -> str:
    parts = []
    if opt.low is not None:
        parts.append(f"{'>' if opt.low_open else '>='} {opt.low:g}")
    if opt.high is not None:
        parts.append(f"{'<' if opt.high_open else '<='} {opt.high:g}")
    return " and ".join(parts)


def _in_bounds(opt: Opt, v) -> bool:
    if opt.low is not None and (v <= opt.low if opt.low_open else v < opt.low):
        return False
    if opt.high is not None and (v >= opt.high if opt.high_open else v > opt.high):
        return False
    return True


def choices_of(opt: Opt) -> list | None:
    if opt.choices is None:
        return None
    return list(opt.choices() if callable(opt.choices) else opt.choices)


def check_value(cls: type, f: dataclasses.Field, value):
    """``value`` (normalised: ints become floats in float fields, tuples lists) if it fits the declaration of
    ``f``; :class:`ConfigError` naming the field otherwise."""
    opt, ft, name = opt_of(f), field_type(cls, f.name), f.name
    if value is None:
        if ft.optional:
            return None
        raise ConfigError(name, f"{name} is required, got None")
    none = " or None" if ft.optional else ""
    if ft.base is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, f"{name} must be true or false{none}, got {value!r}")
        return value
    if ft.base in (int, float):
        integer = ft.base is int
        ok = _is_int(value) if integer else (_is_number(value) and math.isfinite(value))
        if not ok or not _in_bounds(opt, value):
            bounds = _bounds_text(opt)
            kind = "an integer" if integer else "a finite number"
            raise ConfigError(name, f"{name} must be {kind}{' ' + bounds if bounds else ''}{none}, got {value!r}")
        return value if integer else float(value)
    if ft.base is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(name, f"{name} must be a non-empty string{none}, got {value!r}")
        choices = choices_of(opt)
        if choices is not None and value not in choices:
            raise ConfigError(name, f"{name} must be one of {choices}, got {value!r}")
        return value
    if ft.base is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, f"{name} must be a list{none}, got {value!r}")
        value = list(value)
        if opt.length is not None and len(value) != opt.length:
            raise ConfigError(name, f"{name} must have {opt.length} entries, got {value!r}")
        item = opt.item
        for v in value:
            good = (item is None or (item is int and _is_int(v)) or (item is str and isinstance(v, str))
                    or (item is float and _is_number(v) and math.isfinite(v)))
            if good and item in (int, float):
                good = _in_bounds(opt, v)
            if not good:
                bounds = _bounds_text(opt)
                what = {int: "integers", float: "finite numbers", str: "strings"}.get(item, "values")
                raise ConfigError(name, f"{name} must be a list of {what}{' ' + bounds if bounds else ''}, "
                                        f"got {value!r}")
        choices = choices_of(opt)
        if choices is not None and any(v not in choices for v in value):
            raise ConfigError(name, f"{name} must be names from {choices}, got {value!r}")
        if item is float:
            value = [float(v) for v in value]
        return value
    if ft.base is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(name, f"{name} must be a mapping of names to values{none}, got {value!r}")
        return dict(value)
    return value


def validate(cfg) -> None:
    """Checks and normalises every declared field of ``cfg`` in place (see :func:`check_value`)."""
    cls = type(cfg)
    for f in fields(cls):
        if opt_of(f) is None:
            continue
        object.__setattr__(cfg, f.name, check_value(cls, f, getattr(cfg, f.name)))


# ------------------------------------------------------------------------------------------ the configs

@dataclass
class RunConfig:
    """The fields every run kind shares. A run kind's config subclasses it, declares its own fields, and may
    give a shared field its own default with :func:`redeclare`. ``__post_init__`` fills kind-dependent
    defaults (``resolve()``), validates every field (:func:`validate`) and then runs ``check()``."""

    kind: typing.ClassVar[str] = ""
    command_field: typing.ClassVar[str | None] = None  # the field the sub-command sets (task, env)

    seed: int = option(0, "seed of weights, dropout and data order", low=0, high=MAX_SEED)
    out: str = option("runs/run", "run directory (default runs/ and the task, model and seed)", metavar="DIR",
                      show_default=False)
    threads: int | None = option(None, "torch threads (default: torch's choice)", low=1, high=1024,
                                 none_words=("none", "auto"))
    log_interval: int = option(10, "steps between train-metric records", low=1, resumable=True)
    save_interval: int | None = option(None, "extra checkpoints every N steps (default: only at validations)",
                                       low=1, resumable=True, none_words=NONE_WORDS)
    time_budget_minutes: float | None = option(
        None, "stop after the first step past MINUTES of training time, summed across --resume (final "
              "evaluation and checkpoint as usual; 'none' removes it on --resume)",
        low=0, low_open=True, high=1e7, resumable=True, flag="--time-budget", metavar="MINUTES",
        none_words=NONE_WORDS)
    budget_clock: str = option("wall", "what --time-budget counts: 'wall' time or the process's 'cpu' time, all "
                                       "threads summed (fair when runs share a machine)", choices=("wall", "cpu"),
                               metavar="wall|cpu")
    precision: str = option("fp32", "fp32, bf16 (the forward pass under torch.autocast to bfloat16; weights and "
                                    "optimizer state stay float32) or auto (bf16 where this machine's measured "
                                    "bf16 matmul is faster; the choice is recorded)", choices=("fp32", "bf16", "auto"),
                            metavar="fp32|bf16|auto")
    weight_decay: float = option(0.0, "L2 penalty the optimizer adds to the gradient (torch.optim's weight_decay)",
                                 low=0, high=1)
    layer_options: dict = option({}, "an option of the model's layer, NAME=VALUE (repeatable), e.g. "
                                     "feature_map=dpfp, nu=2; see 'fastweights models --options'",
                                 flag="--layer-opt", metavar="NAME=VALUE", show_default=False)

    def __post_init__(self):
        self.resolve()
        validate(self)
        self.check()

    def resolve(self) -> None:
        """Fills defaults that depend on other fields (before validation)."""

    def check(self) -> None:
        """Checks that involve several fields (after validation)."""

    def preflight(self, resume: bool) -> None:
        """Checks of what the run will read (data files, optional packages), made before anything is written;
        :class:`ConfigError` naming the field otherwise. ``resume``: continuing a run (its own copies exist)."""

    def resume_fixups(self, changes: dict) -> dict:
        """The resume changes with the fields that follow from them (e.g. ``steps`` clears ``epochs``)."""
        return changes

    # -- saving and reading
    def to_dict(self) -> dict:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict):
        return config_from_dict(cls, data)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def config_from_dict(cls: type, data: dict, what: str = "config"):
    """``cls(**data)`` with one-line errors for a non-object and for unknown keys (the ``kind`` marker and
    hyphenated names are accepted)."""
    if not isinstance(data, dict):
        raise ValueError(f"a {cls.kind or 'run'} {what} must be a JSON/YAML object, got {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    kind = data.pop("kind", None)
    if kind not in (None, cls.kind):
        raise ValueError(f"this {what} is of a {kind!r} run, not a {cls.kind!r} run")
    data.pop("format", None)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.kind} {what} field(s): {', '.join(unknown)}")
    return cls(**data)


def resume_changes(saved, overrides: dict) -> dict:
    """The fields of ``overrides`` that differ from the ``saved`` config; :class:`ConfigError` for any that
    ``--resume`` may not change (not declared ``resumable``). A path is the same path spelled relative or
    absolute."""
    declared = {f.name: opt_of(f) for f in fields(type(saved))}
    changes = {}
    for name, value in overrides.items():
        old = getattr(saved, name)
        if old == value or (name in PATH_FIELDS and isinstance(old, str) and isinstance(value, str)
                            and Path(old).expanduser().resolve() == Path(value).expanduser().resolve()):
            continue
        opt = declared.get(name)
        if opt is None or not opt.resumable:
            raise ConfigError(name, f"cannot change {name} on resume: the run has {old!r}, got {value!r}")
        changes[name] = value
    return changes


def load_recipe(path: str) -> dict:
    """The mapping in a ``--config`` file (YAML, or JSON, which YAML reads too); one-line errors."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"--config: cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"--config: {path} is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"--config: {path} is not valid YAML/JSON ({str(e).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"--config: {path} must hold a mapping of field names to values, got "
                         f"{type(data).__name__}")
    return data
