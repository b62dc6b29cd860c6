"""Shared test helpers: the op checks (compare implementations on outputs, final states and all gradients) and
the ways the command-line tests run ``fastweights``: in this process (``cli_in_process``: no torch start-up),
as a real subprocess (``cli_subprocess``), or under torchrun (``torchrun``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, Mapping

import torch


def shape_id(**dims) -> str:
    """``shape_id(B=2, T=63, H=2, D=16) -> 'B2-T63-H2-D16'``."""
    return "-".join(f"{k}{v}" for k, v in dims.items())


def flat_state(state) -> list[torch.Tensor]:
    if state is None:
        return []
    if isinstance(state, torch.Tensor):
        return [state]
    return [s for s in state if s is not None]


def run_with_grads(run: Callable, impl: str, inputs: Mapping[str, torch.Tensor], seed: int = 0):
    """Runs ``run(impl, **inputs) -> (o, state)`` with dense random upstream gradients on o and on every
    state tensor; returns (o, [state...], {name: grad}) for every input that requires grad."""
    o, state = run(impl, **inputs)
    states = flat_state(state)
    g = torch.Generator().manual_seed(seed)
    loss = (o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum()
    for s in states:
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
    names = [n for n, x in inputs.items() if isinstance(x, torch.Tensor) and x.requires_grad]
    grads = torch.autograd.grad(loss, [inputs[n] for n in names], allow_unused=True)
    return o, states, dict(zip(names, grads))


def assert_impls_match(run: Callable, inputs: Mapping[str, torch.Tensor], fast: str, ref: str = "reference",
                       atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Outputs, final states and every input gradient of ``fast`` equal those of ``ref``."""
    o1, s1, g1 = run_with_grads(run, ref, inputs)
    o2, s2, g2 = run_with_grads(run, fast, inputs)
    torch.testing.assert_close(o2, o1, atol=atol, rtol=rtol, msg=lambda m: f"output: {m}")
    assert len(s1) == len(s2), f"state lengths differ: {len(s1)} vs {len(s2)}"
    for i, (a, b) in enumerate(zip(s2, s1)):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m, i=i: f"state[{i}]: {m}")
    assert g1.keys() == g2.keys()
    for n in g1:
        assert g1[n] is not None and g2[n] is not None, f"no gradient for {n}"
        torch.testing.assert_close(g2[n], g1[n], atol=atol, rtol=rtol, msg=lambda m, n=n: f"grad {n}: {m}")


def assert_two_halves(run: Callable, seq_inputs: Mapping[str, torch.Tensor], other: Mapping[str, object],
                      impl: str, split: int, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Running ``[0, split)`` then ``[split, T)`` with the carried state equals running the whole.

    ``seq_inputs`` are sliced along dim 1 (time); ``other`` (weights, initial_state, ...) is passed as is
    to the first half only for ``initial_state``."""
    whole_o, whole_s = run(impl, **seq_inputs, **other, output_final_state=True)
    first = {n: x[:, :split] for n, x in seq_inputs.items()}
    second = {n: x[:, split:] for n, x in seq_inputs.items()}
    o1, s1 = run(impl, **first, **other, output_final_state=True)
    rest = {n: x for n, x in other.items() if n != "initial_state"}
    o2, s2 = run(impl, **second, **rest, initial_state=s1, output_final_state=True)
    torch.testing.assert_close(torch.cat([o1, o2], dim=1), whole_o, atol=atol, rtol=rtol)
    for a, b in zip(flat_state(s2), flat_state(whole_s)):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def gradcheck_op(run: Callable, impl: str, inputs: Mapping[str, torch.Tensor]) -> None:
    """``torch.autograd.gradcheck`` in float64 over every input that requires grad, outputs and states."""
    names = list(inputs)

    def f(*xs):
        o, state = run(impl, **dict(zip(names, xs)))
        return (o, *flat_state(state))

    assert torch.autograd.gradcheck(f, tuple(inputs[n] for n in names), eps=1e-6, atol=1e-5, rtol=1e-3)


def case_runner(spec, case, **options) -> Callable:
    """``run(impl, **tensors) -> (o, state)`` for the op checks above, over the tensors of a registry case
    (``case.tensors()``: its inputs and ``initial_state.<name>`` entries); ``options`` go to the op."""

    def run(impl, output_final_state=True, **tensors):
        inputs = {n: tensors[n] for n in case.inputs}
        state = (tuple(tensors[f"initial_state.{n}"] for n in case.state_names) if case.initial_state else None)
        return spec.call(impl, inputs, state, output_final_state, **case.options, **options)

    return run


# ------------------------------------------------------------------------------------------ the command line

def cli_env(**extra) -> dict:
    """The environment of a CLI subprocess: one thread everywhere, no fault injection unless asked for."""
    e = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    e.pop("FASTWEIGHTS_FAULT", None)
    e.update(extra)
    return e


def cli_subprocess(*args, fault: str | None = None, timeout: float = 120,
                   check: int | None = None) -> subprocess.CompletedProcess:
    """The real ``fastweights`` command in a fresh Python process (``fault``: FASTWEIGHTS_FAULT for it);
    ``check``: the exit status it must have. Costs a torch start-up (seconds): use it where a real process
    is the point (kill -9, end-to-end runs)."""
    extra = {"FASTWEIGHTS_FAULT": fault} if fault else {}
    proc = subprocess.run([sys.executable, "-m", "fastweights.cli", *map(str, args)], capture_output=True,
                          text=True, env=cli_env(**extra), timeout=timeout)
    if check is not None:
        assert proc.returncode == check, f"rc {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def torchrun(*args, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node NPROC -m fastweights.cli ARGS`` (gloo on CPU), one thread each;
    asserts it exits 0 (on failure: every process's error line, then the end of stderr)."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), "-m", "fastweights.cli", *map(str, args)], capture_output=True, text=True,
                          env=cli_env(), timeout=timeout)
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines()
                  if ln.startswith("fastweights: error") or re.match(r"\[rank\d+\]: \w+(Error|Exception)\b", ln)]
        raise AssertionError(f"torchrun exited {proc.returncode}; errors:\n" + "\n".join(errors)
                             + "\n--- end of stderr:\n" + proc.stderr[-3000:])
    return proc


class CliResult:
    """What ``cli_in_process`` returns: the fields of a finished subprocess that the tests read."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli_in_process(capsys, *args, check: int | None = None) -> CliResult:
    """``fastweights ARGS`` run by ``fastweights.cli.main`` in this process, with what it printed (through
    pytest's ``capsys``) and its exit status: main's return value, or argparse's SystemExit code. An
    exception that would be a traceback in a subprocess propagates and fails the test."""
    from fastweights.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    if check is not None:
        assert code == check, f"rc {code}\nstdout:\n{out}\nstderr:\n{err}"
    return CliResult(code, out, err)


def read_records(run: Path, split: str | None = None) -> list[dict]:
    """The metrics.jsonl records of a training run (of one split)."""
    recs = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if split is None or r["split"] == split]


def strip_timing(recs: list[dict]) -> list[dict]:
    """Records without their wall-clock fields, for bitwise comparisons of two runs."""
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "train_seconds")} for r in recs]
