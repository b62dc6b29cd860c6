"""``fastweights bench train``: training steps of several models on an algorithmic task, side by side.

Every case (model x precision) is the real supervised training step (the run's data sampler and padding, its
model, the task objective, backward, gradient clipping and the Adam update), built exactly as ``fastweights
train`` builds it. Cases are timed interleaved, round-robin, one step each per round, so machine noise hits
them alike; the table gives the median ms/step, tokens/s (the batch's real tokens, padding not counted),
achieved GFLOP/s (counted as 6 x parameters x tokens) and, beside it, this machine's measured matmul GFLOP/s in
the same precision (:func:`fastweights.train.precision.matmul_speed`).

Baselines: ``--baseline DIR`` times the same cases with the fastweights package found in ``DIR`` (e.g. a git
worktree of an older commit) in a second process, alternating rounds with this code's process, so that both
are measured side by side. This module therefore uses only long-standing APIs of the package (``TrainConfig``,
``build_model``, ``make_splits``, the supervised task's hooks), imported by absolute name, and runs as a
script (``python fastweights/bench/train.py --worker ...``) under either tree.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from contextlib import nullcontext

TASK_OPTIONS = {"listops": {"depth": 10}, "code-exec": {"num_vars": 3}}
TASKS = (*TASK_OPTIONS, "formal")  # formal: next-symbol-set prediction, spec["language"] (this code only)


# ------------------------------------------------------------------------------------------ one worker process

def _build_case(task: str, model: str, precision: str, sizes: list, batch_size: int, seed: int, size: dict,
                language: str = "parity"):
    """``(step function, parameters)`` of one case, from the package this process imports."""
    import torch

    if task == "formal":
        return _build_formal_case(model, precision, sizes, batch_size, seed, size, language)

    from fastweights.tasks import make_splits
    from fastweights.train import TrainConfig
    from fastweights.train.data import EncodedSplit
    from fastweights.train.loop import _SupervisedTask

    fields = dict(task=task, model=model, seed=seed, sizes=sizes, **size, **TASK_OPTIONS[task])
    if batch_size is not None:
        fields["batch_size"] = batch_size
    try:
        cfg = TrainConfig(**fields, precision=precision)
    except TypeError:  # a package from before precisions existed: fp32 only
        if precision != "fp32":
            raise ValueError("this fastweights has no precision option (fp32 only)") from None
        cfg = TrainConfig(**fields)
    splits = _splits(task, sizes, make_splits)
    from fastweights.train.driver import seeded_model_and_optimizer

    model_, opt = seeded_model_and_optimizer(cfg, 0, torch.device("cpu"))
    train_set = EncodedSplit(task, splits.train)
    t = _SupervisedTask(cfg, model_, train_set, train_set, torch.device("cpu"), 0, 1)
    return _step_function(cfg, model_, opt, t, precision)


def _build_formal_case(model: str, precision: str, sizes: list, batch_size, seed: int, size: dict, language: str):
    """A formal-language training step (:mod:`fastweights.train.formal`): the run's own task and defaults, the
    train split of ``sizes[0]`` words of lengths 1-50."""
    import torch

    from fastweights.tasks.formal import make_formal_splits
    from fastweights.train.driver import seeded_model_and_optimizer
    from fastweights.train.formal import FormalConfig, FormalSplit, _FormalTask

    fields = dict(model=model, language=language, seed=seed, sizes=sizes, precision=precision, **size)
    if batch_size is not None:
        fields["batch_size"] = batch_size
    cfg = FormalConfig(**fields)
    key = ("formal", language, tuple(sizes))
    if key not in _SPLITS:
        _SPLITS[key] = make_formal_splits(language, cfg.lengths, cfg.test_lengths, sizes, cfg.data_seed)
    splits = _SPLITS[key]
    sets = {s: FormalSplit(language, splits[s]) for s in ("train", "valid", "test")}
    model_, opt = seeded_model_and_optimizer(cfg, 0, torch.device("cpu"))
    t = _FormalTask(cfg, model_, sets, torch.device("cpu"), 0, 1)
    return _step_function(cfg, model_, opt, t, precision)


def _step_function(cfg, model_, opt, t, precision: str):
    """``(step, parameters)``: one real training step of task ``t`` (sample, forward, backward, clip, update)."""
    import torch

    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
    params = sum(p.numel() for p in model_.parameters())

    def step() -> int:
        batch = t.next_batch()
        with ctx():
            loss = t.forward(batch)
        opt.zero_grad(set_to_none=True)
        t.scale(loss.sum, loss.count).backward()
        torch.nn.utils.clip_grad_norm_(model_.parameters(), cfg.grad_clip or float("inf"))
        opt.step()
        t.after_update(loss)
        return int(batch["lengths"].sum())

    return step, params, cfg.batch_size


_SPLITS: dict = {}


def _splits(task, sizes, make_splits):
    key = (task, tuple(sizes))
    if key not in _SPLITS:
        _SPLITS[key] = make_splits(task, sizes=sizes, seed=0, progress=False, **TASK_OPTIONS[task])
    return _SPLITS[key]


def worker(spec: dict) -> dict:
    """Builds every case of ``spec`` and times ``spec["steps"]`` steps of each, round-robin after
    ``spec["warmup"]`` warm-up steps; returns per-case step times and tokens."""
    import torch

    torch.set_num_threads(spec["threads"])
    cases, out = {}, {}
    for model in spec["models"]:
        for precision in spec["precisions"]:
            name = f"{model}|{precision}"
            try:
                extra = {"language": spec["language"]} if spec["task"] == "formal" else {}
                cases[name] = _build_case(spec["task"], model, precision, spec["sizes"], spec["batch_size"],
                                          spec["seed"], spec["size"], **extra)
            except Exception as e:  # noqa: BLE001 - reported per case (e.g. an op that fails under autocast)
                out[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    for _ in range(spec["warmup"]):
        for name, (step, *_) in list(cases.items()):
            try:
                step()
            except Exception as e:  # noqa: BLE001
                out[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
                del cases[name]
    times = {name: [] for name in cases}
    tokens = {name: [] for name in cases}
    for _ in range(spec["steps"]):
        for name, (step, *_) in cases.items():
            t0 = time.perf_counter()
            n = step()
            times[name].append(time.perf_counter() - t0)
            tokens[name].append(n)
    for name, (_, params, batch) in cases.items():
        out[name] = {"seconds": times[name], "tokens": tokens[name], "params": params, "batch_size": batch}
    return out


# ------------------------------------------------------------------------------------------ the driver

def run_bench(task: str, models: list, precisions: list, steps: int = 10, warmup: int = 2, rounds: int = 2,
              threads: int = 2, batch_size: int | None = 64, seed: int = 0, size: dict | None = None,
              train_examples: int = 2000, baseline: str | None = None, progress=None,
              language: str = "parity") -> list[dict]:
    """One row per (code, model, precision): median ms/step, tokens/s, GFLOP/s and this machine's matmul
    GFLOP/s in that precision. ``rounds`` alternating worker processes per code (``steps`` steps each).
    ``batch_size`` None: the task's default; ``task="formal"`` trains on ``language`` (no baseline: the formal
    task is newer than the baselines this compares against)."""
    import torch

    from ..train.precision import matmul_speed

    spec = {"task": task, "models": models, "precisions": precisions, "steps": steps, "warmup": warmup,
            "threads": threads, "batch_size": batch_size, "seed": seed, "size": size or {},
            "sizes": [train_examples, 16, 16], "language": language}
    from .workers import alternating_rounds  # the driver's side only: a worker may run under an older tree

    merged: dict = {}
    for label, name, res in alternating_rounds(__file__, spec, rounds, baseline, progress):
        entry = merged.setdefault((label, name), {"seconds": [], "tokens": [], "params": None, "error": None,
                                                  "batch_size": batch_size})
        if "error" in res:
            entry["error"] = res["error"]
            continue
        entry["seconds"] += res["seconds"]
        entry["tokens"] += res["tokens"]
        entry["params"] = res["params"]
        entry["batch_size"] = res.get("batch_size", entry["batch_size"])
    torch.set_num_threads(threads)
    peak = matmul_speed("cpu")
    rows = []
    for (label, name), e in merged.items():
        model, precision = name.split("|")
        row = {"code": label, "model": model, "precision": precision, "task": task, "threads": threads,
               "batch_size": e["batch_size"], "matmul_gflops": peak.get(precision),
               **({"language": language} if task == "formal" else {})}
        if e["error"] or not e["seconds"]:
            rows.append({**row, "error": e["error"] or "no steps"})
            continue
        ms = statistics.median(e["seconds"]) * 1e3
        tok = sum(e["tokens"]) / sum(e["seconds"])
        rows.append({**row, "ms_per_step": round(ms, 2), "tokens_per_s": round(tok, 1), "params": e["params"],
                     "gflops": round(6 * e["params"] * tok / 1e9, 2), "steps": len(e["seconds"])})
    if baseline:
        base = {(r["model"], r["precision"]): r for r in rows if r["code"] == "baseline" and "error" not in r}
        base_fp32 = {r["model"]: r for r in rows if r["code"] == "baseline" and r["precision"] == "fp32"
                     and "error" not in r}
        for r in rows:
            if r["code"] != "current" or "error" in r:
                continue
            same = base.get((r["model"], r["precision"]))
            if same is not None and r["precision"] != "fp32":
                r["speedup_vs_baseline"] = round(r["tokens_per_s"] / same["tokens_per_s"], 2)
            if r["model"] in base_fp32:
                r["speedup_vs_baseline_fp32"] = round(r["tokens_per_s"] / base_fp32[r["model"]]["tokens_per_s"], 2)
    return rows


def render_table(rows: list[dict], title: str):
    from rich.table import Table

    table = Table(title=title)
    for col in ("code", "model", "precision", "ms/step", "tokens/s", "GFLOP/s", "matmul GFLOP/s", "x baseline fp32"):
        table.add_column(col, justify="left" if col in ("code", "model", "precision") else "right")
    for r in rows:
        if "error" in r:
            table.add_row(r["code"], r["model"], r["precision"], "error", r["error"][:60], "", "", "")
            continue
        table.add_row(r["code"], r["model"], r["precision"], f"{r['ms_per_step']:.1f}", f"{r['tokens_per_s']:,.0f}",
                      f"{r['gflops']:.1f}", f"{r['matmul_gflops']:.0f}",
                      f"{r['speedup_vs_baseline_fp32']:.2f}" if "speedup_vs_baseline_fp32" in r else "")
    return table


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    print(json.dumps(worker(json.loads(sys.argv[2]))))
