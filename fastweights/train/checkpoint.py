"""Checkpoints: atomic, self-checking, loadable with ``torch.load(weights_only=True)``.

Layout under ``RUN_DIR/checkpoints/``::

    step-00000200/model.safetensors   the weights (safetensors, shared tensors stored once)
    step-00000200/trainer.pt          optimizer, scheduler, RNG states, data position, step, best so far
    last.json                         {"step": 200, "dir": "step-00000200"}: the checkpoint to resume from
    best.json                         the same for the best-validation checkpoint

A checkpoint directory is written under a temporary name, flushed to disk, then renamed into place;
only then is the pointer file (``last.json`` / ``best.json``) replaced, itself through a temporary file
and ``os.replace``. A crash at any moment leaves the pointers naming complete checkpoints. Directories no
pointer names are deleted after each save.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from . import _faults

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
TRAINER = "trainer.pt"
POINTERS = ("last", "best")


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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(payload, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
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
    os.replace(tmp, root / name)
    _fsync_dir(root)
    for p in pointers:
        write_json_atomic(root / f"{p}.json", {"step": step, "dir": name})
    prune(root)
    return root / name


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
    if "/" in ptr["dir"] or ptr["dir"] in ("", ".", ".."):
        raise CheckpointError(f"{path}: bad checkpoint directory name {ptr['dir']!r}")
    return ptr


def prune(ckpt_root: Path) -> None:
    """Deletes checkpoint directories that no pointer names, and leftover temporary directories."""
    keep = set()
    for p in POINTERS:
        try:
            ptr = read_pointer(ckpt_root, p)
        except CheckpointError:
            return  # do not delete anything while a pointer is unreadable
        if ptr:
            keep.add(ptr["dir"])
    for child in ckpt_root.iterdir():
        if child.is_dir() and child.name not in keep and (child.name.startswith("step-")
                                                          or child.name.startswith(".step-")):
            shutil.rmtree(child, ignore_errors=True)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def load_checkpoint(ckpt_root: str | os.PathLike, model=None, which: str = "last",
                    map_location="cpu") -> tuple[dict, dict] | None:
    """Loads the ``which`` checkpoint: weights into ``model`` (if given, strictly) and the trainer
    state with ``weights_only=True``. Returns ``(pointer, trainer_state)``, or None if there is no
    checkpoint. Raises :class:`CheckpointError` (one line) on anything missing or damaged."""
    import torch
    from safetensors.torch import load_model

    root = Path(ckpt_root)
    ptr = read_pointer(root, which)
    if ptr is None:
        return None
    cdir = root / ptr["dir"]
    weights, trainer = cdir / WEIGHTS, cdir / TRAINER
    for f in (weights, trainer):
        if not f.is_file():
            raise CheckpointError(f"checkpoint {cdir}: {f.name} is missing")
    if model is not None:
        try:
            missing, unexpected = load_model(model, str(weights), strict=True, device=str(map_location))
        except Exception as e:  # safetensors raises several types for truncated/corrupt files
            raise CheckpointError(f"checkpoint {weights}: cannot load the weights ({_one_line(e)})") from None
    try:
        state = torch.load(trainer, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle, zip and EOF errors for truncated/corrupt files
        raise CheckpointError(f"checkpoint {trainer}: cannot load the trainer state ({_one_line(e)})") from None
    if not isinstance(state, dict) or state.get("step") != ptr["step"]:
        raise CheckpointError(f"checkpoint {cdir}: trainer state does not belong to step {ptr['step']}")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {cdir}: format version {state.get('format_version')!r}, "
                              f"expected {FORMAT_VERSION}")
    return ptr, state
