"""``fastweights bench ops``: every op x impl x shape, forward + backward, against its reference and SDPA.

The ops, their impls and their inputs come from the op registry (:data:`fastweights.ops.registry.OPS`, each
op at its first variant, from a zero state); causal softmax attention is added as the baseline.

Each row: median forward+backward milliseconds (dense random upstream gradient), tokens/s (B*T per
second), peak memory of the forward+backward, the speed-up over the op's step-loop reference and the
ratio to causal softmax attention (``scaled_dot_product_attention``) at the same shape. Everything at
one shape is timed interleaved in one process, so the ratios are side-by-side measurements.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..ops.registry import OPS, OpSpec
from .timing import clear_grads, fwd_bwd, peak_memory_bytes, time_interleaved

DEFAULT_SHAPES = ((16, 8, 256, 16), (8, 8, 512, 32), (4, 4, 1024, 64))


@dataclass(frozen=True)
class BenchOp:
    """How to benchmark one op: ``make(B, H, T, D, dtype, seed) -> (inputs, call)`` builds its leaf inputs
    (a dict of tensors) and ``call(impl) -> output`` runs it on them; ``impls`` are the impls timed."""

    make: Callable[[int, int, int, int, torch.dtype, int], tuple[dict, Callable[[str], torch.Tensor]]]
    impls: tuple[str, ...]


def _make_sdpa(B, H, T, D, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = {n: torch.randn(B, H, T, D, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
         for n in ("q", "k", "v")}
    return x, lambda impl: _softmax_attention(impl, x)


def _softmax_attention(impl, x):
    if impl == "sdpa":
        return F.scaled_dot_product_attention(x["q"], x["k"], x["v"], is_causal=True)
    T, D = x["q"].shape[-2:]
    scores = (x["q"] @ x["k"].transpose(-1, -2)) * D ** -0.5
    mask = torch.ones(T, T, dtype=torch.bool, device=scores.device).triu_(1)
    return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1) @ x["v"]


def _from_registry(spec: OpSpec) -> BenchOp:
    """A registry op at its first variant, from a zero state, without the final state."""
    variant = next(iter(spec.variants.values()))

    def make(B, H, T, D, dtype, seed):
        case = spec.make_inputs(B, T, H, D, dtype=dtype, seed=seed, with_state=False, **variant)
        return case.inputs, lambda impl: spec.run(case, impl, output_final_state=False)[0]

    # not the step path: it is for calls of a few steps (generation), and its cost grows with T (ops._step)
    return BenchOp(make, tuple(i for i in spec.impls if i != "step"))


# causal softmax attention (the baseline every row is compared with), then every op of the registry
OP_SPECS: dict[str, BenchOp] = {
    "softmax_attention": BenchOp(_make_sdpa, ("reference", "sdpa")),
    **{name: _from_registry(spec) for name, spec in OPS.items()},
}


@dataclass
class Row:
    op: str
    impl: str
    B: int
    H: int
    T: int
    D: int
    ms: float
    tokens_per_s: float
    peak_mb: float
    speedup_vs_reference: float | None
    ratio_to_sdpa: float | None  # sdpa_ms / ms: above 1 means faster than softmax attention


def parse_shape(text: str) -> tuple[int, int, int, int]:
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--shapes: expected BxHxTxD with positive ints (e.g. 8x8x512x32), got {text!r}")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def run_benchmark(op_names=None, shapes=DEFAULT_SHAPES, repeats=5, threads=2, dtype=torch.float32,
                  with_reference=True, with_memory=True, progress=None, seed=0) -> list[Row]:
    """Benchmarks ``op_names`` (default: all) at ``shapes``; returns one Row per op x impl x shape."""
    names = list(OP_SPECS) if op_names is None else list(op_names)
    unknown = [n for n in names if n not in OP_SPECS]
    if unknown:
        raise ValueError(f"--ops: unknown op {unknown[0]!r}; choose from {', '.join(OP_SPECS)}")
    if "softmax_attention" not in names:
        names.insert(0, "softmax_attention")  # the ratio-to-SDPA column needs it
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {repeats}")
    torch.set_num_threads(threads)
    rows: list[Row] = []
    for B, H, T, D in shapes:
        gen = torch.Generator().manual_seed(seed)  # the upstream gradients
        fns, meta = {}, {}
        for name in names:
            spec = OP_SPECS[name]
            inputs, call = spec.make(B, H, T, D, dtype, seed)
            for impl in spec.impls:
                if impl == "reference" and not with_reference:
                    continue
                out_shape = call(impl).shape
                grad = torch.randn(out_shape, generator=gen, dtype=dtype)
                fn = (lambda call=call, impl=impl, inputs=inputs, grad=grad:
                      fwd_bwd(lambda: call(impl), inputs, grad))
                fns[(name, impl)] = fn
                meta[(name, impl)] = inputs
        if progress:
            progress(f"timing {len(fns)} op x impl pairs at B={B} H={H} T={T} D={D}")
        ms = time_interleaved(fns, repeats=repeats, warmup=1)
        sdpa_ms = ms.get(("softmax_attention", "sdpa"))
        for (name, impl), fn in fns.items():
            clear_grads(meta[(name, impl)])
            peak = peak_memory_bytes(fn, torch.device("cpu")) if with_memory else float("nan")
            ref = ms.get((name, "reference"))
            rows.append(Row(op=name, impl=impl, B=B, H=H, T=T, D=D, ms=ms[(name, impl)],
                            tokens_per_s=B * T / (ms[(name, impl)] / 1e3), peak_mb=peak / 2**20,
                            speedup_vs_reference=(ref / ms[(name, impl)]) if ref else None,
                            ratio_to_sdpa=(sdpa_ms / ms[(name, impl)]) if sdpa_ms else None))
    return rows


def environment(threads: int) -> dict:
    return {"torch": torch.__version__, "threads": threads, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_json(path, rows: list[Row], env: dict) -> None:
    with open(path, "w") as f:
        json.dump({"environment": env, "rows": [dataclasses.asdict(r) for r in rows]}, f, indent=1)


def render_markdown(rows: list[Row]) -> str:
    """The rows as a GitHub-flavoured markdown table."""
    fmt = lambda x, f: "—" if x is None else f.format(x)  # noqa: E731
    lines = ["| op | impl | B,H,T,D | fwd+bwd ms | tokens/s | peak MiB | × reference | × sdpa |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.op} | {r.impl} | {r.B},{r.H},{r.T},{r.D} | {r.ms:.1f} | {r.tokens_per_s:,.0f} | "
                     f"{r.peak_mb:.1f} | {fmt(r.speedup_vs_reference, '{:.2f}')} | {fmt(r.ratio_to_sdpa, '{:.2f}')} |")
    return "\n".join(lines) + "\n"


def read_json(path) -> tuple[list[Row], dict]:
    """Rows and environment from a file written by :func:`write_json`."""
    try:
        with open(path) as f:
            data = json.load(f)
        return [Row(**r) for r in data["rows"]], data.get("environment", {})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read benchmark rows from {path}: {e}") from None


def plot_rows(rows: list[Row], path, title: str = "") -> None:
    """One panel per shape: forward+backward ms of every op's reference and fast path (log scale), with
    causal softmax attention (SDPA) as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys((r.B, r.H, r.T, r.D) for r in rows))
    ops_ = [op for op in dict.fromkeys(r.op for r in rows) if op != "softmax_attention"]
    fig, axes = plt.subplots(1, len(shapes), figsize=(5 * len(shapes), 0.45 * len(ops_) + 1.8), squeeze=False,
                             sharey=True)
    for ax, shape in zip(axes[0], shapes):
        at = {(r.op, r.impl): r for r in rows if (r.B, r.H, r.T, r.D) == shape}
        y = range(len(ops_))
        ref = [at[(op, "reference")].ms if (op, "reference") in at else float("nan") for op in ops_]
        fast = [next((r.ms for (o, i), r in at.items() if o == op and i != "reference"), float("nan")) for op in ops_]
        ax.barh([i + 0.2 for i in y], ref, height=0.4, color="#bbbbbb", label="step-loop reference")
        ax.barh([i - 0.2 for i in y], fast, height=0.4, color="#1f77b4", label="fast path (chunk / fused)")
        if ("softmax_attention", "sdpa") in at:
            ax.axvline(at[("softmax_attention", "sdpa")].ms, color="#d62728", ls="--", label="causal SDPA")
        ax.set_xscale("log")
        ax.set_yticks(list(y), ops_)
        ax.invert_yaxis()
        ax.set_xlabel("forward+backward ms (log)")
        ax.set_title("B,H,T,D = " + ",".join(map(str, shape)))
        ax.grid(axis="x", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_table(rows: list[Row], title: str):
    from rich.table import Table

    table = Table(title=title)
    for col, just in [("op", "left"), ("impl", "left"), ("B,H,T,D", "left"), ("fwd+bwd ms", "right"),
                      ("tokens/s", "right"), ("peak MiB", "right"), ("× reference", "right"),
                      ("× sdpa", "right")]:
        table.add_column(col, justify=just)
    fmt = lambda x, f: "—" if x is None else f.format(x)  # noqa: E731
    for r in rows:
        table.add_row(r.op, r.impl, f"{r.B},{r.H},{r.T},{r.D}", f"{r.ms:.1f}", f"{r.tokens_per_s:,.0f}",
                      f"{r.peak_mb:.1f}", fmt(r.speedup_vs_reference, "{:.2f}"), fmt(r.ratio_to_sdpa, "{:.2f}"))
    return table
