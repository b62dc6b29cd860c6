"""The ``fastweights`` command line. Thin: parses flags and calls into the library."""

from __future__ import annotations

import argparse
import sys


def _bench_ops(args) -> int:
    import torch
    from rich.console import Console

    from .bench.ops import (DEFAULT_SHAPES, environment, parse_shape, plot_rows, render_markdown, render_table,
                            run_benchmark, write_json)

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
    out = Console() if sys.stdout.isatty() else Console(width=160)  # no wrapping in logs and pipes
    out.print(render_table(rows, title))
    if args.json:
        write_json(args.json, rows, env)
        console.log(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(render_markdown(rows))
        console.log(f"wrote {args.markdown}")
    if args.plot:
        plot_rows(rows, args.plot, title)
        console.log(f"wrote {args.plot}")
    return 0


def _bench_plot(args) -> int:
    from .bench.ops import plot_rows, read_json

    rows, env = read_json(args.results)
    plot_rows(rows, args.out, f"fast-weight ops, forward+backward, {env.get('threads', '?')} threads "
                              f"(torch {env.get('torch', '?')})")
    print(f"wrote {args.out}")
    return 0


_CONFIG_FLAGS = {"d_model": "--d-model", "num_layers": "--layers", "num_heads": "--heads", "head_dim": "--head-dim",
                 "d_ff": "--d-ff", "vocab_size": "--vocab", "adaptive_softmax": "--adaptive-softmax",
                 "head": "--head", "num_classes": "--num-classes", "pos_encoding": "--pos-encoding"}


def _emit_json(target: str, payload) -> None:
    import json

    text = json.dumps(payload, indent=2)
    if target == "-":
        print(text)
    else:
        with open(target, "w") as f:
            f.write(text + "\n")


def _models(args) -> int:
    from rich.console import Console

    from .models import ConfigError
    from .models.summary import parameter_counts, render_table

    num_classes = None if args.head == "lm" and args.num_classes is None else (args.num_classes or 10)
    fields = dict(vocab_size=args.vocab, d_model=args.d_model, num_layers=args.layers, num_heads=args.heads,
                  head_dim=args.head_dim, d_ff=args.d_ff, head=args.head, num_classes=num_classes,
                  tie_embeddings=not args.no_tie, adaptive_softmax=args.adaptive_softmax)
    try:
        rows = parameter_counts(**fields)
    except ConfigError as e:
        flag = _CONFIG_FLAGS.get(e.field)
        raise ValueError(f"{flag}: {e}" if flag else str(e)) from None
    if args.json:
        _emit_json(args.json, {"config": fields, "rows": rows})
        if args.json == "-":
            return 0
    asm = f", adaptive softmax {args.adaptive_softmax}" if args.adaptive_softmax else ""
    tie = ", untied" if args.no_tie else ", tied" if args.head == "lm" else ""
    hd = args.head_dim or (args.d_model // args.heads)
    title = (f"parameters: d_model {args.d_model}, {args.layers} layers, {args.heads} heads x {hd}, "
             f"FF {args.d_ff or 4 * args.d_model}, vocab {args.vocab:,}, head {args.head}{asm}{tie}")
    out = Console() if sys.stdout.isatty() else Console(width=160)
    out.print(title)
    out.print(render_table(rows, None))
    return 0


def _bench_step(args) -> int:
    from rich.console import Console

    from .bench.step import render_table, step_benchmark

    console = Console(stderr=True)
    rows = []
    for name in args.layer:
        console.log(f"stepping {name} through {args.tokens} tokens")
        rows.append(step_benchmark(name, tokens=args.tokens, d_model=args.d_model, num_layers=args.layers,
                                   num_heads=args.heads, threads=args.threads))
    if args.json:
        _emit_json(args.json, {"rows": rows})
        if args.json == "-":
            return 0
    title = (f"one token at a time, no_grad: {args.layers} layers, d_model {args.d_model}, {args.heads} heads, "
             f"{args.threads} thread(s)")
    out = Console() if sys.stdout.isatty() else Console(width=160)
    out.print(title)
    out.print(render_table(rows, None))
    return 0


def _layer_list(text: str) -> list[str]:
    from .layers import layer_names

    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in layer_names()]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"--layer must be comma-separated names from {layer_names()}, got {text!r}")
    return names


def _cutoffs(text: str) -> list[int]:
    try:
        cut = [int(c) for c in text.split(",")]
    except ValueError:
        cut = None
    if not cut or any(c < 1 for c in cut) or any(a >= b for a, b in zip(cut, cut[1:])):
        raise argparse.ArgumentTypeError(f"--adaptive-softmax must be increasing positive integers separated "
                                         f"by commas, got {text!r}")
    return cut


def _int_at_least(flag: str, low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer >= {low}, got {text!r}")
        return value

    return parse


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


def _data(args) -> int:
    import time

    from rich.console import Console

    from .tasks import make_splits, write_splits

    opts = {"num_vars": args.vars, "length": args.length} if args.task == "code-exec" else \
        {"depth": args.depth, "ops": args.ops}
    start = time.perf_counter()
    splits = make_splits(args.task, sizes=args.sizes, seed=args.seed, **opts)
    try:
        write_splits(args.out, splits)
    except OSError as e:
        raise ValueError(f"--out: cannot write to {args.out}: {e.strerror or e}") from None
    sizes = "/".join(str(len(splits[s])) for s in ("train", "valid", "test"))
    Console(stderr=True).log(f"wrote {args.task} train/valid/test {sizes} to {args.out} "
                             f"in {time.perf_counter() - start:.1f} s")
    return 0


def _sizes(text: str) -> tuple[int, int, int]:
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) != 3 or any(s < 0 for s in sizes) or sum(sizes) == 0:
        raise argparse.ArgumentTypeError(f"--sizes must be three non-negative integers TRAIN,VALID,TEST, got {text!r}")
    return sizes


def _listops_ops(text: str) -> list[str]:
    from .tasks.listops import ALL_OPS

    ops = [o.strip().upper() for o in text.split(",") if o.strip()]
    if not ops or any(o not in ALL_OPS for o in ops) or len(set(ops)) != len(ops):
        raise argparse.ArgumentTypeError(f"--ops must be distinct comma-separated names from {','.join(ALL_OPS)}, "
                                         f"got {text!r}")
    return ops


def _depth(text: str) -> int:
    from .tasks.listops import MAX_DEPTH

    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= MAX_DEPTH:
        raise argparse.ArgumentTypeError(f"--depth must be an integer in 1..{MAX_DEPTH}, got {text!r}")
    return value


# ---- train / eval -------------------------------------------------------------------------------------

def _parse_int(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{flag}: expected an integer, got {text!r}") from None


def _parse_float(flag: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{flag}: expected a number, got {text!r}") from None


def _parse_optional_float(flag: str, text: str):
    return None if text.strip().lower() in ("none", "off", "0") else _parse_float(flag, text)


def _parse_budget(flag: str, text: str):
    return None if text.strip().lower() in ("none", "off") else _parse_float(flag, text)


def _parse_ints(flag: str, text: str) -> list:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def _parse_floats(flag: str, text: str) -> list:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated numbers, got {text!r}") from None


# flag -> (TrainConfig field, parser); every train flag is read as text and validated by TrainConfig, so a
# bad value gives one line naming the flag.
_TRAIN_FLAGS = {
    "--model": ("model", lambda f, t: t), "--vars": ("num_vars", _parse_int), "--length": ("length", _parse_int),
    "--depth": ("depth", _parse_int), "--ops": ("ops", lambda f, t: [o.strip().upper() for o in t.split(",")]),
    "--sizes": ("sizes", _parse_ints), "--data-seed": ("data_seed", _parse_int), "--data": ("data_dir", lambda f, t: t),
    "--d-model": ("d_model", _parse_int), "--layers": ("num_layers", _parse_int), "--heads": ("num_heads", _parse_int),
    "--dropout": ("dropout", _parse_float), "--steps": ("steps", _parse_int), "--epochs": ("epochs", _parse_int),
    "--batch-size": ("batch_size", _parse_int), "--lr": ("lr", _parse_float), "--betas": ("betas", _parse_floats),
    "--grad-clip": ("grad_clip", _parse_optional_float), "--warmup": ("warmup_steps", _parse_int),
    "--loss-on": ("loss_positions", lambda f, t: t), "--seed": ("seed", _parse_int), "--out": ("out", lambda f, t: t),
    "--eval-interval": ("eval_interval", _parse_int), "--save-interval": ("save_interval", _parse_int),
    "--log-interval": ("log_interval", _parse_int), "--eval-batch-size": ("eval_batch_size", _parse_int),
    "--threads": ("threads", _parse_int), "--time-budget": ("time_budget_minutes", _parse_budget),
    "--budget-clock": ("budget_clock", lambda f, t: t),
}
_TRAIN_HELP = {
    "--model": "layer name (default delta-rnn), see 'fastweights models'",
    "--vars": "code-exec: number of variables, 3 or 5 (default 5)",
    "--length": "code-exec: statements per program (default 100)",
    "--depth": "listops: exact bracket depth (default 10)",
    "--ops": "listops: comma-separated operators (default MIN,MAX,FIRST)",
    "--sizes": "TRAIN,VALID,TEST examples to generate (default 10000,1000,1000)",
    "--data-seed": "seed of the generated splits (default 0)",
    "--data": "read the splits from a 'fastweights data' directory instead of generating them",
    "--d-model": "model width (default 128)", "--layers": "blocks (default 2)", "--heads": "heads (default 4)",
    "--dropout": "dropout (default 0.1)", "--steps": "optimizer steps (default 5000)",
    "--epochs": "epochs instead of --steps", "--batch-size": "global batch (default 64)",
    "--lr": "Adam learning rate (default 3e-4)", "--betas": "Adam betas B1,B2 (default 0.9,0.995)",
    "--grad-clip": "max gradient norm, or none (default 1.0)", "--warmup": "linear warm-up steps (default 0)",
    "--loss-on": "code-exec: 'prints' (executed-print positions, default) or 'all' tokens",
    "--seed": "seed of weights, dropout and data order (default 0)",
    "--out": "run directory (default runs/TASK-OPTION-MODEL-sSEED)",
    "--eval-interval": "steps between validations and checkpoints (default 200)",
    "--save-interval": "extra checkpoints every N steps (default: only at validations)",
    "--log-interval": "steps between train-metric records (default 10)",
    "--eval-batch-size": "batch of evaluation (default 256)",
    "--threads": "torch threads (default: torch's choice)",
    "--time-budget": "stop after the first step past MINUTES of training wall time, summed across --resume "
                     "(final eval and checkpoint as usual; 'none' removes it on --resume)",
    "--budget-clock": "what --time-budget counts: 'wall' time (default) or the process's 'cpu' time, all "
                      "threads summed (fair when runs share a machine)",
}
_TRAIN_METAVARS = {"--out": "DIR", "--data": "DIR", "--time-budget": "MINUTES", "--budget-clock": "wall|cpu"}


def _train_config_error(e) -> ValueError:
    flags = {field: flag for flag, (field, _) in _TRAIN_FLAGS.items()}
    flag = flags.get(getattr(e, "field", None))
    return ValueError(f"{flag}: {e}" if flag else str(e))


def _train(args) -> int:
    from .train import TrainConfig, TrainConfigError, TrainError, resume_config, train

    given = {}
    for flag, (field, parse) in _TRAIN_FLAGS.items():
        text = getattr(args, field)
        if text is not None:
            given[field] = parse(flag, text)
    given["task"] = args.task
    try:
        if args.resume:
            if "out" not in given:
                raise ValueError("--resume: give the run directory with --out")
            cfg = resume_config(given["out"], given)
        else:
            if "out" not in given:
                option = f"v{given.get('num_vars', 5)}" if args.task == "code-exec" else f"d{given.get('depth', 10)}"
                given["out"] = (f"runs/{args.task}-{option}-{given.get('model', 'delta-rnn')}"
                                f"-s{given.get('seed', 0)}")
            cfg = TrainConfig(**given)
    except TrainConfigError as e:
        raise _train_config_error(e) from None
    try:
        summary = train(cfg, resume=args.resume)
    except TrainConfigError as e:
        raise _train_config_error(e) from None
    except TrainError as e:
        print(f"fastweights: error: {e}", file=sys.stderr)
        return 1
    return 0 if summary["status"] in ("completed", "stopped") else 1


def _compare(args) -> int:
    import json

    from .train.compare import load_run, markdown_table, plot_runs, summarize_run

    runs = [load_run(d) for d in args.run_dirs]
    rows = [summarize_run(r, args.metric, test=args.test) for r in runs]
    table = markdown_table(rows)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(table, end="")
    if args.markdown:
        open(args.markdown, "w", encoding="utf-8").write(table)
    if args.plot:
        plot_runs(runs, args.plot, args.metric, title=args.title)
    return 0


def _eval(args) -> int:
    import json

    from .cli_lm import LM_EVAL_FLAGS, eval_lm_command
    from .cli_rl import maybe_eval
    from .train import evaluate_run
    from .train.lm import is_lm_run

    rl_code = maybe_eval(args)
    if rl_code is not None:
        return rl_code
    if is_lm_run(args.run_dir):
        return eval_lm_command(args)
    for field, flag in LM_EVAL_FLAGS.items():
        if getattr(args, field, None) is not None:
            raise ValueError(f"{flag}: applies to language-model runs only; {args.run_dir} is not one")

    result = evaluate_run(args.run_dir, split=args.split, which=args.checkpoint)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['task']} {result['options']}, model {result['model']}, {result['checkpoint']} checkpoint "
          f"(step {result['step']}), {result['split']} split ({result['examples']} examples):")
    keys = ("print_acc", "seq_acc") if result["task"] == "code-exec" else ("acc",)
    for k in keys:
        print(f"  {k:<10} {100 * result[k]:.2f}%")
    print(f"  {'loss':<10} {result['loss']:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import cli_lm, cli_rl

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
    bops.add_argument("--markdown", metavar="PATH", help="also write the table as markdown")
    bops.add_argument("--plot", metavar="PNG", help="also draw the timings (one panel per shape)")
    bops.set_defaults(func=_bench_ops)
    bplot = bench_sub.add_parser("plot", help="draw the timings of a 'bench ops --json' file")
    bplot.add_argument("results", metavar="JSON", help="a file written by 'fastweights bench ops --json'")
    bplot.add_argument("--out", required=True, metavar="PNG", help="where to write the picture")
    bplot.set_defaults(func=_bench_plot)

    bstep = bench_sub.add_parser("step", help="RSS and per-token latency of stepping a model one token at a time")
    bstep.add_argument("--layer", type=_layer_list, default=["deltanet", "transformer"],
                       help="comma-separated layer names (default: deltanet,transformer)")
    bstep.add_argument("--tokens", type=_int_at_least("--tokens", 73), default=4096, help="tokens to step through")
    bstep.add_argument("--d-model", type=_positive_int("--d-model"), default=128)
    bstep.add_argument("--layers", type=_positive_int("--layers"), default=2)
    bstep.add_argument("--heads", type=_positive_int("--heads"), default=4)
    bstep.add_argument("--threads", type=_positive_int("--threads"), default=1, help="torch threads")
    bstep.add_argument("--json", nargs="?", const="-", metavar="PATH",
                       help="write the rows as JSON to PATH (bare --json: to stdout, instead of the table)")
    bstep.set_defaults(func=_bench_step)
    cli_lm.add_bench_generate(bench_sub)

    models = sub.add_parser("models", help="every layer name with its model's parameter count at one size")
    models.add_argument("--d-model", type=_positive_int("--d-model"), default=128)
    models.add_argument("--layers", type=_positive_int("--layers"), default=2, help="number of blocks")
    models.add_argument("--heads", type=_positive_int("--heads"), default=4)
    models.add_argument("--head-dim", type=_positive_int("--head-dim"), default=None,
                        help="size of one head (default d_model / heads)")
    models.add_argument("--d-ff", type=_positive_int("--d-ff"), default=None, help="feedforward width (default 4 x d_model)")
    models.add_argument("--vocab", type=_positive_int("--vocab"), default=1000, help="vocabulary size")
    models.add_argument("--adaptive-softmax", type=_cutoffs, default=None, metavar="CUTOFFS",
                        help="adaptive-softmax cutoffs, e.g. 20000,40000,200000 (lm head)")
    models.add_argument("--head", choices=["lm", "token", "sequence"], default="lm")
    models.add_argument("--num-classes", type=_positive_int("--num-classes"), default=None,
                        help="classes of the token/sequence heads (default 10)")
    models.add_argument("--no-tie", action="store_true", help="untie the lm head's input and output word weights")
    models.add_argument("--json", nargs="?", const="-", metavar="PATH",
                        help="write the rows as JSON to PATH (bare --json: to stdout, instead of the table)")
    models.set_defaults(func=_models)

    data = sub.add_parser("data", help="generate train/valid/test splits of an algorithmic task as text files")
    data_sub = data.add_subparsers(dest="task", required=True)
    for name, help_ in (("code-exec", "code execution programs (src<TAB>tgt per line)"),
                        ("listops", "sequential ListOps at an exact depth (tokens<TAB>label per line)")):
        d = data_sub.add_parser(name, help=help_)
        d.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
        d.add_argument("--seed", type=_int_at_least("--seed", 0), default=0)
        d.add_argument("--sizes", type=_sizes, default=(10000, 1000, 1000), metavar="TRAIN,VALID,TEST",
                       help="examples per split (default 10000,1000,1000)")
        if name == "code-exec":
            d.add_argument("--vars", type=int, choices=[3, 5], default=5, help="number of variables (default 5)")
            d.add_argument("--length", type=_int_at_least("--length", 2), default=100,
                           help="statements per program (default 100)")
        else:
            d.add_argument("--depth", type=_depth, default=10, help="exact maximum bracket nesting (default 10)")
            d.add_argument("--ops", type=_listops_ops, default=["MIN", "MAX", "FIRST"],
                           help="comma-separated operators from MIN,MAX,FIRST,MED,SM (default MIN,MAX,FIRST)")
        d.set_defaults(func=_data)
    cli_lm.add_data_wikitext(data_sub)
    train_p = sub.add_parser("train", help="train a model on an algorithmic task (the paper's recipe by default)")
    train_sub = train_p.add_subparsers(dest="task", required=True)
    for name, help_ in (("code-exec", "code execution: print accuracy and sequence accuracy"),
                        ("listops", "sequential ListOps: accuracy")):
        t = train_sub.add_parser(name, help=help_)
        for flag, (field, _) in _TRAIN_FLAGS.items():
            if flag in (("--depth", "--ops") if name == "code-exec" else ("--vars", "--length", "--loss-on")):
                t.set_defaults(**{field: None})
                continue
            t.add_argument(flag, dest=field, default=None, metavar=_TRAIN_METAVARS.get(flag, field.upper()),
                           help=_TRAIN_HELP[flag])
        t.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint (its saved config is used)")
        t.set_defaults(func=_train)
    cli_lm.add_train_lm(train_sub)
    cli_rl.add_train_parsers(train_sub)

    cmp_ = sub.add_parser("compare", help="one table row and one validation curve per run, on one time axis")
    cmp_.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    cmp_.add_argument("--metric", default=None, help="validation metric (default: the task's main one)")
    cmp_.add_argument("--test", action="store_true", help="also score each run's best checkpoint on the test split "
                                                          "(kept in RUN_DIR/evals.json and reused)")
    cmp_.add_argument("--plot", metavar="PNG", help="write the curves here")
    cmp_.add_argument("--title", default=None, help="title of the plot")
    cmp_.add_argument("--markdown", metavar="MD", help="write the table here")
    cmp_.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    cmp_.set_defaults(func=_compare)

    ev = sub.add_parser("eval", help="test-split metrics of a training run's best-validation checkpoint")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.add_argument("--split", choices=["train", "valid", "test"], default="test")
    ev.add_argument("--checkpoint", choices=["best", "last"], default="best")
    cli_lm.add_eval_lm_flags(ev)
    cli_rl.add_eval_flags(ev)
    ev.set_defaults(func=_eval)
    cli_lm.add_generate(sub)
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
