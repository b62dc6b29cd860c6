"""Fault injection for the reliability tests: ``FASTWEIGHTS_FAULT="KIND:STEP"``.

Kinds: ``kill-at-step`` (SIGKILL this process right after that optimizer step), ``kill-in-save`` (SIGKILL
in the middle of writing that step's checkpoint), ``nan-at-step`` (make that step's loss NaN).
Unset (the normal case), every check is a no-op.
"""

from __future__ import annotations

import os
import signal

ENV = "FASTWEIGHTS_FAULT"


def _parse():
    spec = os.environ.get(ENV, "")
    if ":" not in spec:
        return None
    kind, _, step = spec.partition(":")
    try:
        return kind.strip(), int(step)
    except ValueError:
        return None


def active(kind: str, step: int) -> bool:
    f = _parse()
    return f is not None and f == (kind, step)


def maybe_kill(kind: str, step: int) -> None:
    if active(kind, step):
        os.kill(os.getpid(), signal.SIGKILL)
