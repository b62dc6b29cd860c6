"""Which code and which machine produced a record.

* :func:`code_identity`: the package version, the SHA-256 of the package's own source files (``source``: the
  same text gives the same key, wherever and however it is installed), and where the package is a git
  checkout the commit and whether the working tree differs from it (``dirty``).
* :func:`machine`: Python, torch, NumPy and numba versions, torch's thread count, the CPU model and the
  accelerator (if any).

Every run directory keeps one record per session (start and each ``--resume``) in ``provenance.json``
(:func:`record_session`), and kept evaluation results are keyed on ``code_identity()["source"]``, so a
score computed by other code is never reused.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
import time
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROVENANCE = "provenance.json"


@functools.lru_cache(maxsize=1)
def source_sha256() -> str:
    """SHA-256 over the package's ``.py`` files (relative path and bytes, in sorted order)."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(str(path.relative_to(PACKAGE_DIR)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _git() -> dict:
    root = PACKAGE_DIR.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return {}
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                 "fastweights", "pyproject.toml"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit.stdout.strip(), "git_dirty": bool(status.stdout.strip())}


def code_identity() -> dict:
    """``{"version", "source", "git_commit"?, "git_dirty"?}`` of the running fastweights."""
    from . import __version__

    return {"version": __version__, "source": source_sha256(), **_git()}


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Versions, threads and hardware of this process."""
    import numpy
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "threads": torch.get_num_threads(), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "platform": platform.platform()}
    try:
        import numba

        info["numba"] = numba.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name()
    return info


def record_session(run_dir, step: int, resumed: bool, **extra) -> None:
    """Appends this session's record (time, step it starts from, code, machine, and ``extra`` entries such as
    the precision) to ``RUN_DIR/provenance.json``."""
    import json

    path = Path(run_dir) / PROVENANCE
    try:
        sessions = json.loads(path.read_text(encoding="utf-8")).get("sessions", [])
    except (OSError, ValueError, AttributeError):
        sessions = []
    sessions.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resumed": resumed, "step": step,
                     "code": code_identity(), "machine": machine(), **extra})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"sessions": sessions}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
