"""``fastweights bench generate``: generation speed of language models against the context length, side by side.

A case is one model (a trained run's best checkpoint, or a randomly initialised model of a layer at an LM preset and
vocabulary) in one precision after one context. Its state is primed by feeding a context of random words (in
chunks, not timed); then ``model.generate`` samples ``tokens`` words one at a time from it, carrying the state, and
that call is timed. Cases are timed interleaved, round-robin, one call each per repeat, so machine noise hits them
alike. Rows give tokens/s and the median ms/token (wall clock, and process CPU time, which other jobs on the
machine disturb less), per context, and how the per-token cost at the longest context compares with the shortest.

Baselines: ``--baseline DIR`` times the same cases with the fastweights package found in ``DIR`` (e.g. a git
worktree of an older commit) in a second process, alternating rounds with this code's process, so that both are
measured side by side. This module therefore uses only long-standing APIs of the package (``LMConfig``,
``build_model``, ``load_lm_config``, ``load_checkpoint``, ``FWPModel.hidden`` and ``FWPModel.generate``), imported by
absolute name, and runs as a script (``python fastweights/bench/generate.py --worker ...``) under either tree.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from contextlib import nullcontext

WIKITEXT103_VOCAB = 267_735  # the official WikiText-103 vocabulary
PRIME_CHUNK = 512  # context words fed per call while priming the state


# ------------------------------------------------------------------------------------------ one worker process

def _build_model(source: dict, seed: int):
    """The model (eval mode) of ``source``: ``{"run_dir": DIR}`` (its best checkpoint) or ``{"model": LAYER,
    "preset": NAME, "vocab": V}`` (random initial weights from ``seed``)."""
    import torch

    from fastweights.models import build_model

    if "run_dir" in source:
        from pathlib import Path

        from fastweights.train.checkpoint import load_checkpoint
        from fastweights.train.lm import CKPT, load_lm_config

        cfg = load_lm_config(source["run_dir"])
        model = build_model(cfg.model_config())
        if load_checkpoint(Path(source["run_dir"]) / CKPT, model, "best") is None:
            raise ValueError(f"{source['run_dir']}: no best checkpoint yet")
        return model.eval()
    from fastweights.train.lm_config import LMConfig

    cfg = LMConfig(model=source["model"], preset=source["preset"], data_dir=".")  # data_dir: not read
    torch.manual_seed(seed)
    return build_model(cfg.model_config(source["vocab"])).eval()


def _prime(model, context: int, seed: int):
    """``(state after context - 1 random words, the last word [1, 1])``; generation starts from that word."""
    import torch

    V = model.cfg.vocab_size
    ids = torch.randint(0, V, (1, context), generator=torch.Generator().manual_seed(seed))
    state = None
    with torch.no_grad():
        for s in range(0, context - 1, PRIME_CHUNK):
            _, state = model.hidden(ids[:, s:min(s + PRIME_CHUNK, context - 1)], state)
    return state, ids[:, -1:]


def worker(spec: dict) -> dict:
    """Builds every case of ``spec`` and times ``spec["repeats"]`` generate calls of each, round-robin after
    one warm-up call each; returns per-case wall and CPU seconds per call."""
    import torch

    torch.set_num_threads(spec["threads"])
    cases, out = {}, {}
    for name, source in spec["sources"].items():
        try:
            model = _build_model(source, spec["seed"])
        except Exception as e:  # noqa: BLE001 - reported per case (e.g. a run this tree cannot read)
            for precision in spec["precisions"]:
                for ctx in spec["contexts"]:
                    out[f"{name}|{precision}|{ctx}"] = {"error": _one_line(e)}
            continue
        params = sum(p.numel() for p in model.parameters())
        for precision in spec["precisions"]:
            autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
            for ctx in spec["contexts"]:
                key = f"{name}|{precision}|{ctx}"
                try:
                    with autocast():
                        state, last = _prime(model, ctx, spec["seed"])
                except Exception as e:  # noqa: BLE001
                    out[key] = {"error": _one_line(e)}
                    continue
                cases[key] = (model, autocast, state, last, params)
    gens = {key: torch.Generator().manual_seed(spec["seed"]) for key in cases}

    def call(key, tokens):
        model, autocast, state, last, _ = cases[key]
        with autocast():
            model.generate(last, tokens, top_k=spec["top_k"], generator=gens[key], state=state)

    for key in list(cases):  # warm-up: one short call each
        try:
            call(key, min(spec["tokens"], 8))
        except Exception as e:  # noqa: BLE001
            out[key] = {"error": _one_line(e)}
            del cases[key]
    wall = {key: [] for key in cases}
    cpu = {key: [] for key in cases}
    for _ in range(spec["repeats"]):
        for key in cases:
            w0, c0 = time.perf_counter(), time.process_time()
            call(key, spec["tokens"])
            wall[key].append(time.perf_counter() - w0)
            cpu[key].append(time.process_time() - c0)
    for key, case in cases.items():
        out[key] = {"seconds": wall[key], "cpu_seconds": cpu[key], "params": case[4]}
    return out


def _one_line(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


# ------------------------------------------------------------------------------------------ the driver

def sources_of(run_dirs: list, models: list, preset: str = "tiny", vocab: int = WIKITEXT103_VOCAB) -> dict:
    """The cases' models by row name: each run directory, then each layer at ``preset`` with ``vocab`` words."""
    out = {str(r): {"run_dir": os.path.abspath(r)} for r in run_dirs}
    out.update({m: {"model": m, "preset": preset, "vocab": vocab} for m in models})
    return out


def run_bench(sources: dict, contexts: list, precisions: list, tokens: int = 128, repeats: int = 3, rounds: int = 2,
              threads: int = 1, top_k: int | None = None, seed: int = 0, baseline: str | None = None,
              progress=None) -> list[dict]:
    """One row per (code, source, precision, context): tokens/s over every timed call, median ms/token (wall and
    CPU), and, for the longest context, its ms/token over the shortest's (``cost_vs_shortest``). ``rounds``
    alternating worker processes per code (``repeats`` calls of ``tokens`` words per case each)."""
    spec = {"sources": sources, "contexts": contexts, "precisions": precisions, "tokens": tokens,
            "repeats": repeats, "threads": threads, "top_k": top_k, "seed": seed}
    from .workers import alternating_rounds  # the driver's side only: a worker may run under an older tree

    merged: dict = {}
    for label, key, res in alternating_rounds(__file__, spec, rounds, baseline, progress):
        entry = merged.setdefault((label, key), {"seconds": [], "cpu_seconds": [], "params": None,
                                                 "error": None})
        if "error" in res:
            entry["error"] = res["error"]
            continue
        entry["seconds"] += res["seconds"]
        entry["cpu_seconds"] += res["cpu_seconds"]
        entry["params"] = res["params"]
    rows = []
    for (label, key), e in merged.items():
        name, precision, ctx = key.rsplit("|", 2)
        src = sources[name]
        row = {"code": label, "name": name, "model": src.get("model", name), "precision": precision,
               "context": int(ctx), "threads": threads, "tokens": tokens,
               **({"preset": src["preset"], "vocab": src["vocab"]} if "model" in src else {"run_dir": src["run_dir"]})}
        if e["error"] or not e["seconds"]:
            rows.append({**row, "error": e["error"] or "no calls"})
            continue
        rows.append({**row, "tokens_per_s": round(tokens * len(e["seconds"]) / sum(e["seconds"]), 1),
                     "ms_per_token": round(statistics.median(e["seconds"]) / tokens * 1e3, 3),
                     "cpu_ms_per_token": round(statistics.median(e["cpu_seconds"]) / tokens * 1e3, 3),
                     "calls": len(e["seconds"]), "params": e["params"]})
    _add_ratios(rows, contexts, baseline is not None)
    return rows


def _add_ratios(rows: list[dict], contexts: list, with_baseline: bool) -> None:
    """``cost_vs_shortest`` on the longest context's rows; with a baseline, ``speedup_vs_baseline`` (same
    precision) and ``speedup_vs_baseline_fp32`` on the current code's rows."""
    ok = {(r["code"], r["name"], r["precision"], r["context"]): r for r in rows if "error" not in r}
    lo, hi = min(contexts), max(contexts)
    for (code, name, precision, ctx), r in ok.items():
        short = ok.get((code, name, precision, lo))
        if ctx == hi and hi != lo and short is not None:
            r["cost_vs_shortest"] = round(r["ms_per_token"] / short["ms_per_token"], 2)
            r["cpu_cost_vs_shortest"] = round(r["cpu_ms_per_token"] / short["cpu_ms_per_token"], 2)
        if not with_baseline or code != "current":
            continue
        same = ok.get(("baseline", name, precision, ctx))
        if same is not None:
            r["speedup_vs_baseline"] = round(r["tokens_per_s"] / same["tokens_per_s"], 2)
        fp32 = ok.get(("baseline", name, "fp32", ctx))
        if fp32 is not None:
            r["speedup_vs_baseline_fp32"] = round(r["tokens_per_s"] / fp32["tokens_per_s"], 2)


def render_table(rows: list[dict], title: str):
    from rich.table import Table

    table = Table(title=title)
    cols = ("code", "model", "precision", "context", "tokens/s", "ms/token", "CPU ms/token", "x shortest context",
            "x baseline", "x baseline fp32")
    for col in cols:
        table.add_column(col, justify="left" if col in ("code", "model", "precision") else "right")
    fmt = lambda r, k, f: format(r[k], f) if k in r else ""  # noqa: E731
    for r in rows:
        if "error" in r:
            table.add_row(r["code"], r["name"], r["precision"], str(r["context"]), "error", r["error"][:60],
                          "", "", "", "")
            continue
        table.add_row(r["code"], r["name"], r["precision"], str(r["context"]), f"{r['tokens_per_s']:,.0f}",
                      f"{r['ms_per_token']:.2f}", f"{r['cpu_ms_per_token']:.2f}", fmt(r, "cost_vs_shortest", ".2f"),
                      fmt(r, "speedup_vs_baseline", ".2f"), fmt(r, "speedup_vs_baseline_fp32", ".2f"))
    return table


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    print(json.dumps(worker(json.loads(sys.argv[2]))))
