"""``fastweights bench step``: memory and latency of stepping a model one token at a time.

A model of ``num_layers`` blocks (default 2, d_model 128, 4 heads, LM head over a 1,000-word vocabulary)
is fed ``tokens`` random token ids one at a time under ``torch.no_grad``, carrying its state, as in
generation. After every token we read the process's resident set size (``/proc/self/statm``; where
that is missing, ``resource``'s peak RSS) and the token's wall-clock latency.

Reported per layer:
* ``rss_growth_mb``: the highest RSS from token 64 on, minus the RSS after token 64.
* ``latency_ratio``: mean latency over the last 64 tokens / mean latency over tokens 8..72 (the "near
  token 16" window, after the first few warm-up calls); ``latency_ratio_median`` the same with medians,
  which shrugs off the odd scheduler hiccup on a shared machine.

The floor for the FWPs (state of constant size): RSS growth < 5 MB and latency ratio <= 1.2 at 4,096
tokens. The softmax transformer's key/value cache grows by one entry per token per layer, so its RSS
and latency grow with the context.
"""

from __future__ import annotations

import os
import resource
import statistics
import time

import torch

EARLY = (8, 72)  # token window for "near token 16"
LATE = 64  # last tokens for "near token N"
SETTLE = 64  # RSS growth is measured after this many tokens


def rss_bytes() -> int:
    """Current resident set size of this process (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def step_benchmark(layer: str = "deltanet", tokens: int = 4096, d_model: int = 128, num_layers: int = 2,
                   num_heads: int = 4, vocab_size: int = 1000, threads: int | None = 1, seed: int = 0,
                   layer_options: dict | None = None) -> dict:
    """Steps a fresh model through ``tokens`` tokens one at a time; returns the measurements (see module doc)."""
    from ..models import ModelConfig, build_model

    if tokens < EARLY[1] + 1:
        raise ValueError(f"tokens must be at least {EARLY[1] + 1} (the early window is tokens "
                         f"{EARLY[0]}..{EARLY[1]}), got {tokens}")
    cfg = ModelConfig(layer=layer, layer_options=dict(layer_options or {}), vocab_size=vocab_size,
                      d_model=d_model, num_layers=num_layers, num_heads=num_heads, head="lm")
    prev_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = build_model(cfg).eval()
        ids = torch.randint(0, vocab_size, (1, tokens))
        lat = []
        rss = []
        state = None
        with torch.no_grad():
            for t in range(tokens):
                t0 = time.perf_counter()
                logits, state = model(ids[:, t:t + 1], state)
                lat.append(time.perf_counter() - t0)
                rss.append(rss_bytes())
    finally:
        torch.set_num_threads(prev_threads)

    early, late = lat[EARLY[0]:EARLY[1]], lat[-LATE:]
    base = rss[SETTLE - 1]
    return {
        "layer": layer,
        "tokens": tokens,
        "d_model": d_model,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "threads": threads,
        "rss_after_64_mb": base / 2**20,
        "rss_end_mb": rss[-1] / 2**20,
        "rss_growth_mb": (max(rss[SETTLE - 1:]) - base) / 2**20,
        "early_ms": statistics.fmean(early) * 1e3,
        "late_ms": statistics.fmean(late) * 1e3,
        "latency_ratio": statistics.fmean(late) / statistics.fmean(early),
        "latency_ratio_median": statistics.median(late) / statistics.median(early),
        "mean_ms": statistics.fmean(lat) * 1e3,
        "tokens_per_s": tokens / sum(lat),
    }


def render_table(rows: list[dict], title: str):
    from rich.table import Table

    table = Table(title=title)
    for col in ("layer", "tokens", "RSS growth MB", "ms/token near 16", "ms/token near N",
                "latency ratio (mean)", "(median)", "tokens/s"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for r in rows:
        table.add_row(r["layer"], str(r["tokens"]), f"{r['rss_growth_mb']:.2f}", f"{r['early_ms']:.3f}",
                      f"{r['late_ms']:.3f}", f"{r['latency_ratio']:.2f}", f"{r['latency_ratio_median']:.2f}",
                      f"{r['tokens_per_s']:.0f}")
    return table
