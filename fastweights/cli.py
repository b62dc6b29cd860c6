"""The ``fastweights`` command line. Thin: parses flags and calls into the library."""

from __future__ import annotations

import argparse
import sys


def _bench_ops(args) -> int:
    import torch
    from rich.console import Console

    from .bench.ops import DEFAULT_SHAPES, environment, parse_shape, render_table, run_benchmark, write_json

    dtypes = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
    shapes = [parse_shape(s) for s in args.shapes.split(";")] if args.shapes else list(DEFAULT_SHAPES)
    op_names = args.ops.split(",") if args.ops else None
    console = Console(stderr=True)
    rows = run_benchmark(op_names, shapes=shapes, repeats=args.repeats, threads=args.threads,
                         dtype=dtypes[args.dtype], with_reference=not args.no_reference,
                         with_memory=not args.no_memory, progress=lambda m: console.log(m))
    env = environment(args.threads)
    title = (f"fast-weight ops, forward+backward, {args.dtype}, {args.threads} threads, "
             f"median of {args.repeats} (torch {env['torch']})")
    Console().print(render_table(rows, title))
    if args.json:
        write_json(args.json, rows, env)
        console.log(f"wrote {args.json}")
    return 0


def _positive_int(flag: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastweights", description="Fast Weight Programmers for PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="target", required=True)
    bops = bench_sub.add_parser("ops", help="every op x impl x shape, forward+backward, vs reference and SDPA")
    bops.add_argument("--ops", help="comma-separated op names (default: all)")
    bops.add_argument("--shapes", help="semicolon-separated BxHxTxD shapes (default: 16x8x256x16;8x8x512x32;4x4x1024x64)")
    bops.add_argument("--repeats", type=_positive_int("--repeats"), default=5, help="timed runs per case (median)")
    bops.add_argument("--threads", type=_positive_int("--threads"), default=2, help="torch/numba threads")
    bops.add_argument("--dtype", choices=["float32", "float64", "bfloat16"], default="float32")
    bops.add_argument("--no-reference", action="store_true", help="skip the (slow) step-loop references")
    bops.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    bops.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    bops.set_defaults(func=_bench_ops)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"fastweights: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastweights: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
