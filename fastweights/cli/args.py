"""What every command's flags share: one number syntax, bounds, output paths checked before any work, and the
flags of a run kind generated from its declared config fields (:mod:`fastweights.train.options`).

Every flag is read as text and turned into a value here or by the config's declaration, so a bad value is
one line naming the flag (``fastweights: error: --steps: ...``) and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import MISSING, fields
from pathlib import Path

from ..train.options import flag_of, opt_of, parse_assignment, parse_number, parse_text

MAX_THREADS = 1024


# ------------------------------------------------------------------------------------------ plain flags

def number(flag: str, integer: bool = True, low=None, high=None, low_open: bool = False):
    """An argparse ``type`` for a number in bounds, in the one syntax (``1e5`` is an integer)."""

    def parse(text: str):
        value = parse_number(text, integer, flag)
        if not math.isfinite(value):
            raise ValueError(f"{flag}: expected a finite number, got {text!r}")
        if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
            lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            hi = "" if high is None else f"<= {high:g}"
            bounds = " and ".join(b for b in (lo, hi) if b)
            raise ValueError(f"{flag}: must be {'an integer' if integer else 'a number'} {bounds}, got {text!r}")
        return value

    parse.__name__ = flag  # argparse names the type in its own messages
    return parse


def threads(flag: str = "--threads"):
    return number(flag, low=1, high=MAX_THREADS)


def number_list(flag: str, integer: bool = True, low=None, high=None, length: int | None = None):
    """Comma-separated numbers (each checked as :func:`number`)."""
    one = number(flag, integer, low, high)

    def parse(text: str):
        parts = [p for p in str(text).split(",")]
        if not text.strip() or any(not p.strip() for p in parts):
            raise ValueError(f"{flag}: expected comma-separated numbers, got {text!r}")
        values = [one(p) for p in parts]
        if length is not None and len(values) != length:
            raise ValueError(f"{flag}: expected {length} comma-separated numbers, got {text!r}")
        return values

    return parse


def output_path(flag: str):
    """An argparse ``type`` for a file the command will write: its directory must exist and be writable, and
    the path must not be a directory; checked before any work starts."""

    def parse(text: str):
        if text == "-":
            return text
        if not text.strip():
            raise ValueError(f"{flag}: expected a file path, got {text!r}")
        path = Path(text).expanduser()
        parent = path.parent if str(path.parent) else Path(".")
        if path.is_dir():
            raise ValueError(f"{flag}: {text} is a directory, expected a file path")
        if not parent.is_dir():
            raise ValueError(f"{flag}: the directory {parent} does not exist")
        if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise ValueError(f"{flag}: cannot write {text} (permission denied)")
        return str(path)

    return parse


def output_dir(flag: str):
    """An argparse ``type`` for a directory the command will create or fill (not empty text)."""

    def parse(text: str):
        if not text.strip():
            raise ValueError(f"{flag}: expected a directory path, got {text!r}")
        path = Path(text).expanduser()
        if path.exists() and not path.is_dir():
            raise ValueError(f"{flag}: {text} exists and is not a directory")
        return str(path)

    return parse


def run_dir(text: str) -> str:
    if not text.strip():
        raise ValueError(f"RUN_DIR: expected a run directory, got {text!r}")
    return text


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``fastweights: error: --steps: expected an integer, got 'x'``, exit 2):
    a flag's ``type`` raising ``ValueError("--flag: ...")`` keeps its message, and usage is not repeated."""

    def _get_value(self, action, arg_string):
        try:
            return super()._get_value(action, arg_string)
        except argparse.ArgumentError as e:
            cause = e.__context__
            if isinstance(cause, ValueError) and str(cause).startswith("-"):
                raise argparse.ArgumentError(None, str(cause)) from None
            raise

    def error(self, message):
        import sys

        print(f"fastweights: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


# ------------------------------------------------------------------------------------------ run-kind flags

def _default_text(cfg_cls, f) -> str:
    opt = opt_of(f)
    if not opt.show_default:
        return ""
    default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING
                                                           else None)
    if default is None or default == [] or default == {}:
        return ""
    if isinstance(default, bool):
        return " (default on)" if default else " (default off)"
    if isinstance(default, list):
        return f" (default {','.join(str(v) for v in default)})"
    if isinstance(default, float):
        return f" (default {default:g})"
    return f" (default {default})"


def add_config_flags(parser: argparse.ArgumentParser, cfg_cls, command: str) -> None:
    """One flag per declared field of ``cfg_cls`` that ``command`` has (generated; see the module doc)."""
    group = parser.add_argument_group("run options (declared in " + cfg_cls.__module__ + "." + cfg_cls.__name__ + ")")
    for f in fields(cfg_cls):
        opt = opt_of(f)
        if opt is None or not opt.cli or (opt.commands and command not in opt.commands):
            continue
        flag = flag_of(f)
        metavar = opt.metavar or f.name.upper()
        help_ = opt.help + _default_text(cfg_cls, f)
        if f.name == "layer_options":
            group.add_argument(flag, dest=f.name, action="append", default=None, metavar=metavar, help=help_)
        elif _is_bool(cfg_cls, f):
            group.add_argument(flag, dest=f.name, nargs="?", const="on", default=None, metavar="on|off", help=help_)
        else:
            group.add_argument(flag, dest=f.name, default=None, metavar=metavar, help=help_)


def _is_bool(cfg_cls, f) -> bool:
    from ..train.options import field_type

    return field_type(cfg_cls, f.name).base is bool


def given_fields(args, cfg_cls, command: str) -> dict:
    """The fields given on the command line (parsed, not yet validated), in declaration order."""
    given = {}
    for f in fields(cfg_cls):
        opt = opt_of(f)
        if opt is None or not opt.cli or (opt.commands and command not in opt.commands):
            continue
        text = getattr(args, f.name, None)
        if text is None:
            continue
        if f.name == "layer_options":
            given[f.name] = dict(parse_assignment(t, flag_of(f)) for t in text)
        else:
            given[f.name] = parse_text(cfg_cls, f.name, text)
    return given


def flag_for_field(cfg_cls, name: str) -> str | None:
    for f in fields(cfg_cls):
        if f.name == name:
            return flag_of(f) if opt_of(f) is not None else None
    return None
