"""Who may write into a run directory, and what a start may find there.

* **One owner.** A training process owns its run directory from :func:`claim` (called by
  :func:`.driver.start_run`, before anything is written) until :func:`release` (the end of
  :meth:`.driver.StepLoop.run`, or the training function's ``finally``): an exclusive ``fcntl.flock`` on
  ``RUN_DIR/.fastweights.lock``, which holds ``pid@host`` while owned. Another process is refused with one
  line naming the directory and the owner. The kernel drops the lock of a process that dies (kill -9 too),
  so a stale lock is taken over by the next start (which says so, the file still naming the dead owner).
  Under ``torchrun`` only rank 0 holds it. The lock file is kept (emptied) when released, except in a
  directory it is alone in (a start that failed before writing anything), which is left as it was found.
* **A fresh start** (no ``--resume``) only begins in a missing or empty directory, or in one holding only
  what an earlier start of fastweights left when it failed before training anything (the lock file, and
  any of ``config.json``, ``data/``, an empty ``metrics.jsonl``, ``tensorboard/``, a ``checkpoints/`` with no
  checkpoint...): those leftovers are removed first. A directory with a checkpoint or a metrics record holds
  a run (resume it); any other non-empty directory is not a run and is refused.
* **Resume** takes the newest checkpoint that validates (:func:`.checkpoint.recover`). With no checkpoint
  at all it starts from step 0 only if nothing was trained (no metrics record), and refuses otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from .checkpoint import CREATED, POINTERS, TMP_DIR, checkpoint_dirs
from .config import TrainConfigError

LOCK = ".fastweights.lock"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
CKPT = "checkpoints"
# what a start of fastweights writes before its first checkpoint or metrics record
LEFTOVERS = frozenset({CONFIG, "data", CKPT, METRICS, "tensorboard", "curves.png", "summary.json", "evals.json"})

_held: dict[str, tuple] = {}  # resolved run directory -> (lock file descriptor, whether claim created the directory)


class RunDirError(TrainConfigError):
    """A run directory that cannot be used (in use, not a run, holds a run): a config error of ``out``."""

    def __init__(self, message: str):
        super().__init__("out", message)


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _key(run_dir) -> str:
    return str(Path(run_dir).resolve())


def owner(run_dir) -> str:
    """What the lock file of ``run_dir`` says about its owner (``pid N on host H``), or ``""``."""
    try:
        text = (Path(run_dir) / LOCK).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    pid, _, host = text.partition("@")
    return f"pid {pid} on host {host}" if pid.isdigit() else ""


def acquire(run_dir, created: bool = False) -> bool:
    """Takes the lock of ``run_dir`` (an existing directory) for this process; returns whether the lock file
    was already there (a fastweights process was here before). Re-entrant within a process. Raises
    :class:`RunDirError` naming the owner when another process holds it."""
    key = _key(run_dir)
    if key in _held:
        return True
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        return (Path(run_dir) / LOCK).exists()
    path = Path(run_dir) / LOCK
    existed = path.exists()
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(f"out {run_dir}: cannot create the lock file {LOCK} ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            who = owner(run_dir) or "another process"
            raise RunDirError(f"out {run_dir} is in use by another fastweights process ({who}); wait for it to "
                              f"end or stop it, or choose another directory") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break  # the file locked is the one at the path (not one its owner removed meanwhile)
        except FileNotFoundError:
            pass
        os.close(fd)
    stale = owner(run_dir)
    if stale:
        _log(f"{run_dir}: taking over the lock of {stale}, which ended without releasing it (killed?)")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
    os.fsync(fd)
    _held[key] = (fd, created)
    return existed


def release(run_dir) -> None:
    """Gives up this process's lock of ``run_dir`` (no-op if it holds none), emptying the lock file. A directory
    left holding nothing but the lock file (a start that failed before writing anything) is left as it was
    found: the lock file is removed, and the directory too if :func:`claim` created it."""
    held = _held.pop(_key(run_dir), None)
    if held is None:
        return
    fd, created = held
    run_dir = Path(run_dir)
    try:
        if [p.name for p in run_dir.iterdir()] == [LOCK]:
            (run_dir / LOCK).unlink()
            if created:
                run_dir.rmdir()
        else:
            os.ftruncate(fd, 0)
    except OSError:
        pass
    os.close(fd)  # closing drops the flock


def holds(run_dir) -> bool:
    """Whether this process holds the lock of ``run_dir``."""
    return _key(run_dir) in _held


def trained_steps(run_dir) -> int | None:
    """The highest step of ``run_dir``'s checkpoints or metrics records; None if it has neither (nothing
    was trained there)."""
    run_dir = Path(run_dir)
    steps = [s for s, _ in checkpoint_dirs(run_dir / CKPT)]
    for p in POINTERS:
        try:
            ptr = json.loads((run_dir / CKPT / f"{p}.json").read_text(encoding="utf-8"))
            steps.append(int(ptr["step"]))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError):
            steps.append(0)  # a pointer, even unreadable, means a checkpoint was written
    try:
        with open(run_dir / METRICS, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:  # a line that is not a record (cut short by a crash, or not ours) says nothing
                    steps.append(int(json.loads(line)["step"]))
                except (ValueError, KeyError, TypeError):
                    pass
    except FileNotFoundError:
        pass
    except OSError:
        steps.append(0)
    return max(steps) if steps else None


def _is_leftover(path: Path) -> bool:
    if path.name == CKPT:  # no checkpoint (trained_steps saw none): at most an interrupted save's temporary files
        return path.is_dir() and all(TMP_DIR.fullmatch(p.name) or p.name == CREATED
                                     or p.name.startswith(f".{CREATED}.tmp") for p in path.iterdir())
    return path.name in LEFTOVERS or (path.name.startswith(".") and ".tmp" in path.name)


def claim(run_dir, resume: bool) -> None:
    """What :func:`.driver.start_run` does on rank 0 before anything else is written: creates ``run_dir``,
    takes its lock, and for a fresh start checks it (see the module doc), removing a failed start's leftovers.
    Raises :class:`RunDirError` (one line)."""
    run_dir = Path(run_dir)
    if str(run_dir).strip() == "":
        raise RunDirError("out: the run directory is an empty path")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"out {run_dir} exists and is not a directory")
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"out: cannot create {run_dir}: {e.strerror or e}") from None
    had_lock = acquire(run_dir, created)
    if resume:
        return
    try:
        _check_fresh(run_dir, had_lock)
    except BaseException:
        release(run_dir)
        raise


def _check_fresh(run_dir: Path, had_lock: bool) -> None:
    entries = sorted(p for p in run_dir.iterdir() if p.name != LOCK)
    if not entries:
        return
    step = trained_steps(run_dir)
    if step is not None:
        raise RunDirError(f"out {run_dir} already holds a run (trained to step {step}); resume it with --resume "
                          f"or choose another directory")
    if not (had_lock and all(_is_leftover(p) for p in entries)):
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in entries[:5])
        more = f" and {len(entries) - 5} more" if len(entries) > 5 else ""
        raise RunDirError(f"out {run_dir} is not empty and holds no fastweights run ({names}{more}); give a new "
                          f"or empty directory")
    for p in entries:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    _log(f"{run_dir} held only what an earlier start left before training anything; starting afresh")


def no_checkpoint_start(run_dir) -> None:
    """What ``--resume`` does when ``run_dir`` has no checkpoint at all: nothing if nothing was trained there
    (the run starts from step 0), else :class:`RunDirError` (the metrics would be overwritten)."""
    step = trained_steps(run_dir)
    if step is not None:
        raise RunDirError(f"out {run_dir}: nothing to resume from: metrics up to step {step} but no checkpoint "
                          f"(none was saved, or {CKPT}/ was removed); move the directory aside to start again")
