"""``fastweights bench train``: training steps of several models side by side (see :mod:`fastweights.bench.train`)."""

from __future__ import annotations

import sys

from .args import number, output_path, threads


def _names(flag: str, allowed):
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",")]
        choices = allowed() if callable(allowed) else allowed
        bad = [n for n in names if n not in choices]
        if not text.strip() or any(not n for n in names) or bad:
            raise ValueError(f"{flag}: expected comma-separated names from {list(choices)}, got {text!r}")
        return names

    return parse


def _layers():
    from ..layers import layer_names

    return layer_names()


def _languages():
    from ..tasks.formal import LANGUAGES

    return tuple(LANGUAGES)


def add_bench_train(bench_sub) -> None:
    b = bench_sub.add_parser("train", help="ms/step, tokens/s and GFLOP/s of training steps, models side by side, "
                                           "per precision (optionally against a baseline tree)")
    b.add_argument("--task", choices=["listops", "code-exec", "formal"], default="listops",
                   help="listops (depth 10), code-exec (3 variables) or formal (--language), each at its "
                        "default size (default listops)")
    b.add_argument("--language", type=_names("--language", _languages), default=["parity"],
                   help="the formal language of --task formal (default parity)")
    b.add_argument("--models", type=_names("--models", _layers), default=["lstm", "transformer", "deltanet",
                                                                            "delta-rnn", "rdn"],
                   help="comma-separated layer names (default lstm,transformer,deltanet,delta-rnn,rdn)")
    b.add_argument("--precision", type=_names("--precision", ("fp32", "bf16")), default=["fp32"],
                   help="comma-separated precisions: fp32, bf16 (default fp32)")
    b.add_argument("--steps", type=number("--steps", low=1, high=10_000), default=10,
                   help="timed steps per case and round (default 10)")
    b.add_argument("--warmup", type=number("--warmup", low=0, high=1000), default=2, help="untimed steps (default 2)")
    b.add_argument("--rounds", type=number("--rounds", low=1, high=100), default=2,
                   help="worker processes per code, alternating with the baseline's (default 2)")
    b.add_argument("--batch-size", type=number("--batch-size", low=1, high=4096), default=None,
                   help="default: the task's (64 for listops and code-exec, 32 for formal)")
    b.add_argument("--threads", type=threads(), default=2, help="torch threads (default 2)")
    b.add_argument("--baseline", metavar="DIR", default=None,
                   help="also time the fastweights package in DIR (e.g. a git worktree of an older commit)")
    b.add_argument("--json", metavar="PATH", type=output_path("--json"), help="also write the rows as JSON")
    b.set_defaults(func=bench_train_command)


def bench_train_command(args) -> int:
    import json
    from pathlib import Path

    from rich.console import Console

    from ..bench.train import render_table, run_bench
    from ..provenance import cpu_model, machine

    if args.task != "formal" and args.language != ["parity"]:
        raise ValueError(f"--language: only with --task formal (got --task {args.task})")
    if len(args.language) != 1:
        raise ValueError(f"--language: one language, got {','.join(args.language)}")
    if args.task == "formal" and args.baseline is not None:
        raise ValueError("--baseline: not with --task formal (the baselines predate the formal task)")
    if args.baseline is not None and not (Path(args.baseline) / "fastweights" / "__init__.py").is_file():
        raise ValueError(f"--baseline: {args.baseline} holds no fastweights package (fastweights/__init__.py)")
    console = Console(stderr=True)
    rows = run_bench(args.task, args.models, args.precision, steps=args.steps, warmup=args.warmup, rounds=args.rounds,
                     threads=args.threads, batch_size=args.batch_size, baseline=args.baseline,
                     progress=lambda m: console.log(m), language=args.language[0])
    task = f"formal {args.language[0]}" if args.task == "formal" else args.task
    batch = rows[0].get("batch_size") if rows else args.batch_size
    title = (f"training steps, {task}, batch {batch}, {args.threads} threads, median of "
             f"{args.steps * args.rounds} interleaved steps; {cpu_model()}")
    out = Console() if sys.stdout.isatty() else Console(width=160)
    out.print(render_table(rows, title))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "rows": rows, "baseline": args.baseline}, f, indent=2)
        console.log(f"wrote {args.json}")
    return 0
