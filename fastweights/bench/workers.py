"""Benchmark worker processes, optionally with an older tree's package (``--baseline DIR``).

A benchmark module that times cases in workers runs itself as a script, ``SCRIPT --worker SPEC_JSON``, and
prints its results as one JSON line last; :func:`run_in_tree` starts it in a fresh Python, with ``tree`` (a
directory holding another ``fastweights`` package, e.g. a git worktree of an older commit) first on the path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_in_tree(script: str, spec: dict, tree: str | None) -> dict:
    """The JSON result of ``script --worker SPEC`` in a fresh process, importing ``fastweights`` from ``tree``
    (None: this environment's). Raises ``RuntimeError`` with the worker's last error line if it fails."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = tree + os.pathsep + env.get("PYTHONPATH", "")
    code = (f"import runpy, sys; sys.argv = [{script!r}, '--worker', {json.dumps(spec)!r}]; "
            f"runpy.run_path({script!r}, run_name='__main__')")  # not as a script: its folder stays off sys.path
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False,
                          cwd=tree or os.getcwd())
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"bench worker ({'baseline ' + tree if tree else 'this code'}) failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def alternating_rounds(script: str, spec: dict, rounds: int, baseline: str | None = None, progress=None):
    """Yields ``(label, key, result)`` for every case of every worker: ``rounds`` rounds, each one worker of this
    code ("current") then, with ``baseline``, one of the baseline tree's ("baseline"), so both are measured
    side by side. ``progress``: called with a line before each worker."""
    trees = [("current", None)] + ([("baseline", baseline)] if baseline else [])
    for r in range(rounds):
        for label, tree in trees:
            if progress:
                progress(f"round {r + 1}/{rounds}: {label} code")
            for key, res in run_in_tree(script, spec, tree).items():
                yield label, key, res
