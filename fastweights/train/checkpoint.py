"""Checkpoints: atomic, self-checking, loadable with ``torch.load(weights_only=True)``.

Layout under ``RUN_DIR/checkpoints/``::

    step-00000200/model.safetensors   the weights (safetensors, shared tensors stored once)
    step-00000200/trainer.pt          optimizer, scheduler, RNG states, data position, step, best so far
    step-00000200/checksums.json      {"step", "format_version", "sha256": {file: hex digest}} of the two files
    last.json                         {"step": 200, "dir": "step-00000200"}: the checkpoint to resume from
    best.json                         the same for the best-validation checkpoint
    created.json                      {"dirs": [...]}: the checkpoint directories fastweights wrote here

A checkpoint directory is written under a temporary name, flushed to disk, then renamed into place;
only then is the pointer file (``last.json`` / ``best.json``) replaced, itself through a temporary file
and ``os.replace``. A crash at any moment leaves the pointers naming complete checkpoints. After each save
the directories that ``created.json`` lists and no pointer names are deleted (with leftover temporary
directories of an interrupted save): nothing else under ``checkpoints/`` is ever deleted.

Every load checks the SHA-256 of both files against ``checksums.json`` (one-line :class:`CheckpointError`
on a mismatch). Checkpoints written before checksums existed (format version 1, no ``checksums.json``) load
unchecked; from format version 2 on a missing ``checksums.json`` is an error. :func:`recover` finds the
checkpoint to resume from when ``last.json`` is missing or names a damaged checkpoint: the newest one that
validates.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from ..tasks.wikitext import sha256_file  # the data files' checksum, for the checkpoint files too
from . import _faults

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: no checksums.json
WEIGHTS = "model.safetensors"
TRAINER = "trainer.pt"
CHECKSUMS = "checksums.json"
CREATED = "created.json"
POINTERS = ("last", "best")
STEP_DIR = re.compile(r"step-(\d{8})(?:-(\d+))?")  # what save_checkpoint names a checkpoint directory
TMP_DIR = re.compile(r"\.step-\d{8}(?:-\d+)?\.tmp-\d+")  # and its temporary directory while writing


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupted or does not fit the model."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def write_json_atomic(path: Path, payload) -> None:
    """Writes ``payload`` as JSON to ``path`` through a temporary file of this process and ``os.replace``: a
    reader (or a crash) sees the old file or the new one, never a mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(payload, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def save_checkpoint(ckpt_root: str | os.PathLike, model, trainer_state: dict, step: int,
                    pointers=("last",)) -> Path:
    """Writes ``model``'s weights and ``trainer_state`` as checkpoint ``step`` and points ``pointers``
    (a subset of ``("last", "best")``) at it. Returns the checkpoint directory."""
    import torch
    from safetensors.torch import save_model

    root = Path(ckpt_root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    n = 0
    while (root / name).exists():  # never overwrite a directory a pointer may name
        n += 1
        name = f"step-{step:08d}-{n}"
    tmp = root / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(model, str(tmp / WEIGHTS), metadata={"step": str(step), "format_version": str(FORMAT_VERSION)})
    _fsync_file(tmp / WEIGHTS)
    _faults.maybe_kill("kill-in-save", step)
    torch.save({**trainer_state, "step": step, "format_version": FORMAT_VERSION}, tmp / TRAINER)
    _fsync_file(tmp / TRAINER)
    write_json_atomic(tmp / CHECKSUMS, {"step": step, "format_version": FORMAT_VERSION,
                                        "sha256": {f: sha256_file(tmp / f) for f in (WEIGHTS, TRAINER)}})
    _record_created(root, name)
    os.replace(tmp, root / name)
    _fsync_dir(root)
    for p in pointers:
        write_json_atomic(root / f"{p}.json", {"step": step, "dir": name})
    prune(root)
    return root / name


def _read_created(root: Path) -> list:
    try:
        dirs = json.loads((root / CREATED).read_text(encoding="utf-8")).get("dirs", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [d for d in dirs if isinstance(d, str) and STEP_DIR.fullmatch(d)]


def _record_created(root: Path, name: str) -> None:
    """Adds ``name`` to ``created.json``, with the directories the pointers name (written by fastweights,
    perhaps before ``created.json`` existed)."""
    dirs = _read_created(root)
    for p in POINTERS:
        try:
            ptr = read_pointer(root, p)
        except CheckpointError:
            ptr = None
        if ptr and STEP_DIR.fullmatch(ptr["dir"]) and ptr["dir"] not in dirs:
            dirs.append(ptr["dir"])
    if name not in dirs:
        dirs.append(name)
    write_json_atomic(root / CREATED, {"dirs": dirs})


def read_pointer(ckpt_root: str | os.PathLike, which: str = "last") -> dict | None:
    """``{"step", "dir"}`` of the ``which`` checkpoint, or None if there is none."""
    path = Path(ckpt_root) / f"{which}.json"
    if not path.exists():
        return None
    try:
        ptr = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(ptr, dict) or not isinstance(ptr.get("step"), int) or not isinstance(ptr.get("dir"), str):
            raise ValueError("expected {\"step\": int, \"dir\": str}")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint pointer ({_one_line(e)})") from None
    if "/" in ptr["dir"] or "\\" in ptr["dir"] or ptr["dir"] in ("", ".", ".."):
        raise CheckpointError(f"{path}: bad checkpoint directory name {ptr['dir']!r}")
    return ptr


def prune(ckpt_root: Path) -> None:
    """Deletes the checkpoint directories this package created (``created.json``) that no pointer names, and
    leftover temporary directories of interrupted saves. Nothing else is touched."""
    keep = set()
    for p in POINTERS:
        try:
            ptr = read_pointer(ckpt_root, p)
        except CheckpointError:
            return  # do not delete anything while a pointer is unreadable
        if ptr:
            keep.add(ptr["dir"])
    created = _read_created(ckpt_root)
    gone = [d for d in created if d not in keep]
    for d in gone:
        shutil.rmtree(ckpt_root / d, ignore_errors=True)
    if gone:
        write_json_atomic(ckpt_root / CREATED, {"dirs": [d for d in created if d in keep]})
    for child in ckpt_root.iterdir():
        if TMP_DIR.fullmatch(child.name) and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def verify_checkpoint(cdir: str | os.PathLike) -> None:
    """Checks that checkpoint directory ``cdir`` is whole: both files present and, where ``checksums.json``
    exists (format version 2 on), their SHA-256 as recorded when it was saved. One-line
    :class:`CheckpointError` otherwise."""
    cdir = Path(cdir)
    for name in (WEIGHTS, TRAINER):
        if not (cdir / name).is_file():
            raise CheckpointError(f"checkpoint {cdir}: {name} is missing")
    path = cdir / CHECKSUMS
    if not path.exists():
        return  # written before checksums existed; load_checkpoint refuses this for format version 2
    try:
        sums = json.loads(path.read_text(encoding="utf-8"))["sha256"]
        want = {name: str(sums[name]) for name in (WEIGHTS, TRAINER)}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: unreadable checksums ({_one_line(e)})") from None
    for name, digest in want.items():
        try:
            got = sha256_file(cdir / name)
        except OSError as e:
            raise CheckpointError(f"checkpoint {cdir / name}: unreadable ({e.strerror or e})") from None
        if got != digest:
            raise CheckpointError(f"checkpoint {cdir / name}: damaged (its SHA-256 differs from the one recorded "
                                  f"when it was saved)")


def load_checkpoint_dir(cdir: str | os.PathLike, model=None, map_location="cpu", step: int | None = None) -> dict:
    """The trainer state of checkpoint directory ``cdir`` (weights into ``model`` if given, strictly), after
    :func:`verify_checkpoint`; ``step``: the step it must hold. Raises :class:`CheckpointError` (one line)."""
    import torch
    from safetensors.torch import load_model

    cdir = Path(cdir)
    verify_checkpoint(cdir)
    weights, trainer = cdir / WEIGHTS, cdir / TRAINER
    try:
        state = torch.load(trainer, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle, zip and EOF errors for truncated/corrupt files
        raise CheckpointError(f"checkpoint {trainer}: cannot load the trainer state ({_one_line(e)})") from None
    if not isinstance(state, dict) or (step is not None and state.get("step") != step):
        raise CheckpointError(f"checkpoint {cdir}: trainer state does not belong to step {step}")
    version = state.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(f"checkpoint {cdir}: format version {version!r}, expected one of "
                              f"{list(READABLE_VERSIONS)}")
    if version >= 2 and not (cdir / CHECKSUMS).is_file():
        raise CheckpointError(f"checkpoint {cdir}: {CHECKSUMS} is missing")
    if model is not None:
        try:
            load_model(model, str(weights), strict=True, device=str(map_location))
        except Exception as e:  # safetensors raises several types for truncated/corrupt files
            raise CheckpointError(f"checkpoint {weights}: cannot load the weights ({_one_line(e)})") from None
    return state


def load_checkpoint(ckpt_root: str | os.PathLike, model=None, which: str = "last",
                    map_location="cpu") -> tuple[dict, dict] | None:
    """Loads the ``which`` checkpoint: weights into ``model`` (if given, strictly) and the trainer
    state with ``weights_only=True``, after checking both files' SHA-256. Returns ``(pointer,
    trainer_state)``, or None if there is no checkpoint. Raises :class:`CheckpointError` (one line) on
    anything missing or damaged; a checkpoint that a run being trained pruned while it was read is not an
    error: the pointer's new checkpoint is read instead."""
    root = Path(ckpt_root)
    ptr = read_pointer(root, which)
    for _ in range(5):  # a run being trained may move the pointer on and prune the checkpoint while it is read
        if ptr is None:
            return None
        try:
            return ptr, load_checkpoint_dir(root / ptr["dir"], model, map_location, ptr["step"])
        except CheckpointError:
            moved = read_pointer(root, which)
            if moved == ptr:
                raise
            ptr = moved
    return ptr, load_checkpoint_dir(root / ptr["dir"], model, map_location, ptr["step"])


def checkpoint_dirs(ckpt_root: str | os.PathLike) -> list[tuple[int, str]]:
    """``(step, directory name)`` of every directory named like a checkpoint, newest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = STEP_DIR.fullmatch(child.name)
        if m and child.is_dir():
            found.append((int(m.group(1)), int(m.group(2) or 0), child.name))
    return [(s, name) for s, _, name in sorted(found, reverse=True)]


def recover(ckpt_root: str | os.PathLike, model=None, map_location="cpu", repoint: bool = True):
    """The checkpoint to resume from: ``(pointer, trainer state, note)``, or None if there is no checkpoint
    at all. ``last.json``'s checkpoint if it validates (``note`` None); otherwise the newest checkpoint
    directory that validates, with ``note`` saying what was wrong and what was taken instead (``last.json``
    is then pointed at it where ``repoint``: rank 0 only under DDP). Raises :class:`CheckpointError` when
    checkpoints exist but none validates."""
    root = Path(ckpt_root)
    problem = None
    try:
        ptr = read_pointer(root, "last")
    except CheckpointError as e:
        ptr, problem = None, str(e)
    if ptr is not None:
        try:
            return ptr, load_checkpoint_dir(root / ptr["dir"], model, map_location, ptr["step"]), None
        except CheckpointError as e:
            problem = str(e)
    elif problem is None:
        problem = f"{root / 'last.json'} is missing"
    candidates = [(s, d) for s, d in checkpoint_dirs(root) if ptr is None or d != ptr["dir"]]
    errors = []
    for step, name in candidates:
        try:
            state = load_checkpoint_dir(root / name, model, map_location, step)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        found = {"step": step, "dir": name}
        if repoint:
            write_json_atomic(root / "last.json", found)
        skipped = f" (skipping {len(errors)} damaged newer one(s))" if errors else ""
        return found, state, (f"{problem}; resuming from {root / name} (step {step}), the newest checkpoint that "
                              f"validates{skipped}")
    if ptr is None and not candidates:
        return None
    raise CheckpointError(f"no checkpoint in {root} validates ({'; '.join([problem, *errors[:1]])})")
