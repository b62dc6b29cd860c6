"""The ``fastweights`` command line. Thin: parses flags and calls into the library."""

from __future__ import annotations

import sys


def _bench_ops(args) -> int:
    import torch
    from rich.console import Console

    from ..bench.ops import (DEFAULT_SHAPES, environment, plot_rows, render_markdown, render_table,
                            run_benchmark, write_json)

    dtypes = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
    shapes = args.shapes or list(DEFAULT_SHAPES)
    op_names = args.ops
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
    from ..bench.ops import plot_rows, read_json

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

    from ..models import ConfigError
    from ..models.summary import layer_options, parameter_counts, render_table

    if args.options:
        rows = layer_options()
        if args.json:
            _emit_json(args.json, {"layer_options": rows})
            if args.json == "-":
                return 0
        for row in rows:
            opts = ", ".join(f"{k}={v!r}" for k, v in row["options"].items()) or "(none)"
            print(f"{row['layer']:<12} {opts}")
        return 0
    num_classes = None if args.head == "lm" and args.num_classes is None else (args.num_classes or 10)
    fields = dict(vocab_size=args.vocab, d_model=args.d_model, num_layers=args.layers, num_heads=args.heads,
                  head_dim=args.head_dim, d_ff=args.d_ff, head=args.head, num_classes=num_classes,
                  tie_embeddings=not args.no_tie, adaptive_softmax=args.adaptive_softmax)
    from ..layers import layer_names

    for name in layer_names():
        _checked_model_config(dict(fields, layer=name))
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

    from ..bench.step import render_table, step_benchmark

    for name in args.layer:  # every layer's model is checked before the first is stepped
        _checked_model_config(dict(layer=name, vocab_size=1000, d_model=args.d_model, num_layers=args.layers,
                                   num_heads=args.heads, head="lm"))
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


MAX_PARAMETERS = 2 * 10**9  # what 'models' and 'bench step' will build (8 GB of float32 weights)


def _checked_model_config(fields: dict):
    """The :class:`~fastweights.models.ModelConfig` of ``fields``, or a one-line error naming the flag at fault;
    also refuses a model past :data:`MAX_PARAMETERS` (counted on the meta device, nothing allocated)."""
    import torch

    from ..models import ConfigError, ModelConfig, build_model
    from ..models.model import count_parameters

    try:
        cfg = ModelConfig(**fields)
        counts = []
        for layers in (1, 2):  # parameters grow linearly with the blocks: two small builds give the count
            with torch.device("meta"), torch.random.fork_rng():
                counts.append(count_parameters(build_model(ModelConfig(**dict(fields, num_layers=layers)))))
    except ConfigError as e:
        flag = _CONFIG_FLAGS.get(e.field)
        raise ValueError(f"{flag}: {e}" if flag else str(e)) from None
    total = counts[0] + (cfg.num_layers - 1) * (counts[1] - counts[0])
    if total > MAX_PARAMETERS:
        raise ValueError(f"--d-model/--layers: a {cfg.layer} model of d_model {cfg.d_model} and {cfg.num_layers} "
                         f"layers has {total:.3g} parameters, past the {MAX_PARAMETERS:.0e} this command builds")
    return cfg


def _layer_list(text: str) -> list[str]:
    from ..layers import layer_names

    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in layer_names()]
    if not names or bad:
        raise ValueError(f"--layer: must be comma-separated names from {layer_names()}, got {text!r}")
    return names


def _cutoffs(text: str) -> list[int]:
    try:
        cut = [int(c) for c in text.split(",")]
    except ValueError:
        cut = None
    if not cut or any(c < 1 for c in cut) or any(a >= b for a, b in zip(cut, cut[1:])):
        raise ValueError(f"--adaptive-softmax: must be increasing positive integers separated by commas, "
                         f"got {text!r}")
    return cut


def _data(args) -> int:
    import time

    from rich.console import Console

    from ..tasks import make_splits, write_splits

    opts = {"num_vars": args.vars, "length": args.length} if args.task == "code-exec" else \
        {"depth": args.depth, "depth_convention": args.depth_convention, "ops": args.ops}
    if args.task == "listops":
        from ..tasks.listops import nesting_depth

        try:
            nesting_depth(args.depth, args.depth_convention)
        except ValueError as e:
            raise ValueError(f"--depth: {e}") from None
    present = _check_data_out(args, opts)
    start = time.perf_counter()
    splits = make_splits(args.task, sizes=args.sizes, seed=args.seed, **opts)
    if present is not None:  # the very same data: the directory keeps its own record of the depth's convention
        splits.meta.pop("listops_depth", None)
        splits.meta.update({k: v for k, v in present.items() if k == "listops_depth"})
    try:
        write_splits(args.out, splits)
    except OSError as e:
        raise ValueError(f"--out: cannot write to {args.out}: {e.strerror or e}") from None
    sizes = "/".join(str(len(splits[s])) for s in ("train", "valid", "test"))
    Console(stderr=True).log(f"wrote {args.task} train/valid/test {sizes} to {args.out} "
                             f"in {time.perf_counter() - start:.1f} s")
    return 0


def _check_data_out(args, opts: dict) -> dict | None:
    """``data --out DIR`` where DIR already holds another data set is refused before generating (existing
    files are never overwritten; the very same data set is accepted, and nothing is rewritten). Returns the
    present ``meta.json`` when DIR holds the very same data set (a ListOps depth asked for in the other
    convention is the same data), else None."""
    import json
    from pathlib import Path

    from ..tasks.splits import SPLIT_FILES

    out = Path(args.out)
    present = [name for name in SPLIT_FILES if (out / name).exists()]
    if not present:
        return None
    if "depth_convention" in opts:  # meta.json's options hold the nesting depth the generator took
        from ..tasks.listops import nesting_depth

        opts = {"depth": nesting_depth(opts["depth"], opts["depth_convention"]), "ops": opts["ops"]}
    try:
        meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
        same = (meta.get("task") == args.task and meta.get("options") == opts and meta.get("seed") == args.seed
                and list((meta.get("sizes") or {}).values()) == list(args.sizes))
    except (OSError, ValueError, AttributeError):
        same = False
    if not same:
        raise ValueError(f"--out: {args.out} already holds {', '.join(present)} of another data set; choose a new "
                         f"or empty directory (existing files are not overwritten)")
    return meta


def _listops_ops(text: str) -> list[str]:
    from ..tasks.listops import ALL_OPS

    ops = [o.strip().upper() for o in text.split(",") if o.strip()]
    if not ops or any(o not in ALL_OPS for o in ops) or len(set(ops)) != len(ops):
        raise ValueError(f"--ops: must be distinct comma-separated names from {','.join(ALL_OPS)}, got {text!r}")
    return ops


# ---- compare / eval -------------------------------------------------------------------------------------

def _compare(args) -> int:
    import json

    from ..train.compare import load_run, markdown_table, plot_runs, summarize_run

    runs = [load_run(d) for d in args.run_dirs]
    if args.test:
        for r in runs:
            if r["kind"] != "supervised":
                raise ValueError(f"--test: scores algorithmic-task runs on their test split; {r['dir']} is "
                                 f"{'a language-model' if r['kind'] == 'lm' else 'an RL'} run (use 'fastweights "
                                 f"eval' on it)")
    if args.metric is not None:
        recorded = sorted({k for r in runs for rec in r["records"] if rec.get("split") == "valid" for k in rec
                           if k not in ("split", "step") and isinstance(rec[k], (int, float))})
        if recorded and args.metric not in recorded:
            raise ValueError(f"--metric: no run records a validation {args.metric!r}; recorded: "
                             f"{', '.join(recorded)}")
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

    from ..train import evaluate_run
    from ..train.runs import run_kind
    from .lm_tools import LM_EVAL_FLAGS, eval_lm_command
    from .rl_tools import RL_EVAL_FLAGS, eval_command

    try:
        kind = run_kind(args.run_dir)
    except ValueError as e:  # not a run: a kind-only flag given is named first
        for flags, what in ((LM_EVAL_FLAGS, "language-model"), (RL_EVAL_FLAGS, "RL")):
            for field, flag in flags.items():
                if getattr(args, field, None) not in (None, False):
                    raise ValueError(f"{flag}: applies to {what} runs only; {e}") from None
        raise
    own = {"lm": LM_EVAL_FLAGS, "rl": RL_EVAL_FLAGS}.get(kind, {})
    its = {"supervised": "an algorithmic-task", "lm": "a language-model", "rl": "an RL"}.get(kind, f"a {kind}")
    for flags in (LM_EVAL_FLAGS, RL_EVAL_FLAGS):
        for field, flag in flags.items():
            if flags is not own and field not in own and getattr(args, field, None) not in (None, False):
                what = "language-model" if flags is LM_EVAL_FLAGS else "RL"
                raise ValueError(f"{flag}: applies to {what} runs only; {args.run_dir} is {its} run")
    if kind == "rl":
        if args.split is not None:
            raise ValueError(f"--split: applies to algorithmic-task and language-model runs only; {args.run_dir} "
                             f"is an RL run (it plays --episodes)")
        return eval_command(args)
    args.split = args.split or "test"
    if kind == "lm":
        return eval_lm_command(args)
    if kind != "supervised":  # any other kind: its registered evaluation, printed generically
        from ..train.runs import evaluate

        result = evaluate(args.run_dir, split=args.split, which=args.checkpoint)
        if args.json:
            print(json.dumps(result, indent=2))
            return 0
        print(f"{kind} run {args.run_dir}, {args.checkpoint} checkpoint (step {result.get('step')}), "
              f"{args.split} split:")
        for k, v in result.items():
            if isinstance(v, float):
                print(f"  {k:<12} {100 * v:.2f}%" if k.endswith("acc") else f"  {k:<12} {v:.4f}")
        return 0
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


def add_tool_commands(sub) -> None:
    """``bench``, ``models``, ``data``, ``compare``, ``eval`` and ``generate``."""
    from . import lm_tools
    from .args import number, output_dir, output_path, run_dir, threads
    from .formal import add_data_formal

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="target", required=True)
    bops = bench_sub.add_parser("ops", help="every op x impl x shape, forward+backward, vs reference and SDPA")
    bops.add_argument("--ops", type=_op_list, help="comma-separated op names (default: all)")
    bops.add_argument("--shapes", type=_shape_list,
                      help="semicolon-separated BxHxTxD shapes (default: 16x8x256x16;8x8x512x32;4x4x1024x64)")
    bops.add_argument("--repeats", type=number("--repeats", low=1, high=10_000), default=5,
                      help="timed runs per case (median)")
    bops.add_argument("--threads", type=threads(), default=2, help="torch/numba threads")
    bops.add_argument("--dtype", choices=["float32", "float64", "bfloat16"], default="float32")
    bops.add_argument("--no-reference", action="store_true", help="skip the (slow) step-loop references")
    bops.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    bops.add_argument("--json", metavar="PATH", type=output_path("--json"), help="also write the rows as JSON")
    bops.add_argument("--markdown", metavar="PATH", type=output_path("--markdown"),
                      help="also write the table as markdown")
    bops.add_argument("--plot", metavar="PNG", type=output_path("--plot"),
                      help="also draw the timings (one panel per shape)")
    bops.set_defaults(func=_bench_ops)
    bplot = bench_sub.add_parser("plot", help="draw the timings of a 'bench ops --json' file")
    bplot.add_argument("results", metavar="JSON", help="a file written by 'fastweights bench ops --json'")
    bplot.add_argument("--out", required=True, metavar="PNG", type=output_path("--out"),
                       help="where to write the picture")
    bplot.set_defaults(func=_bench_plot)

    bstep = bench_sub.add_parser("step", help="RSS and per-token latency of stepping a model one token at a time")
    bstep.add_argument("--layer", type=_layer_list, default=["deltanet", "transformer"],
                       help="comma-separated layer names (default: deltanet,transformer)")
    bstep.add_argument("--tokens", type=number("--tokens", low=73, high=10**7), default=4096,
                       help="tokens to step through")
    bstep.add_argument("--d-model", type=number("--d-model", low=1, high=65536), default=128)
    bstep.add_argument("--layers", type=number("--layers", low=1, high=1024), default=2)
    bstep.add_argument("--heads", type=number("--heads", low=1, high=4096), default=4)
    bstep.add_argument("--threads", type=threads(), default=1, help="torch threads")
    bstep.add_argument("--json", nargs="?", const="-", metavar="PATH", type=output_path("--json"),
                       help="write the rows as JSON to PATH (bare --json: to stdout, instead of the table)")
    bstep.set_defaults(func=_bench_step)
    lm_tools.add_bench_generate(bench_sub)
    from .bench_train import add_bench_train

    add_bench_train(bench_sub)

    models = sub.add_parser("models", help="every layer name with its model's parameter count at one size")
    models.add_argument("--d-model", type=number("--d-model", low=1, high=65536), default=128)
    models.add_argument("--layers", type=number("--layers", low=1, high=1024), default=2, help="number of blocks")
    models.add_argument("--heads", type=number("--heads", low=1, high=4096), default=4)
    models.add_argument("--head-dim", type=number("--head-dim", low=1, high=65536), default=None,
                        help="size of one head (default d_model / heads)")
    models.add_argument("--d-ff", type=number("--d-ff", low=1, high=2**20), default=None,
                        help="feedforward width (default 4 x d_model)")
    models.add_argument("--vocab", type=number("--vocab", low=1, high=10**7), default=1000, help="vocabulary size")
    models.add_argument("--adaptive-softmax", type=_cutoffs, default=None, metavar="CUTOFFS",
                        help="adaptive-softmax cutoffs, e.g. 20000,40000,200000 (lm head)")
    models.add_argument("--head", choices=["lm", "token", "sequence"], default="lm")
    models.add_argument("--num-classes", type=number("--num-classes", low=1, high=10**7), default=None,
                        help="classes of the token/sequence heads (default 10)")
    models.add_argument("--no-tie", action="store_true", help="untie the lm head's input and output word weights")
    models.add_argument("--options", action="store_true",
                        help="list every layer's options (what 'train --layer-opt NAME=VALUE' sets) with defaults")
    models.add_argument("--json", nargs="?", const="-", metavar="PATH", type=output_path("--json"),
                        help="write the rows as JSON to PATH (bare --json: to stdout, instead of the table)")
    models.set_defaults(func=_models)

    data = sub.add_parser("data", help="generate train/valid/test splits of an algorithmic task as text files")
    data_sub = data.add_subparsers(dest="task", required=True)
    for name, help_ in (("code-exec", "code execution programs (src<TAB>tgt per line)"),
                        ("listops", "sequential ListOps at an exact depth (tokens<TAB>label per line)")):
        d = data_sub.add_parser(name, help=help_)
        d.add_argument("--out", required=True, metavar="DIR", type=output_dir("--out"),
                       help="output directory (created)")
        d.add_argument("--seed", type=number("--seed", low=0, high=2**32 - 1), default=0)
        d.add_argument("--sizes", type=_sizes, default=(10000, 1000, 1000), metavar="TRAIN,VALID,TEST",
                       help="examples per split (default 10000,1000,1000)")
        if name == "code-exec":
            d.add_argument("--vars", type=_num_vars, default=5, help="number of variables, 3 or 5 (default 5)")
            d.add_argument("--length", type=number("--length", low=2, high=100_000), default=100,
                           help="statements per program (default 100)")
        else:
            d.add_argument("--depth", type=_depth, default=10,
                           help="exact depth of every example, counted as --depth-convention says (default 10)")
            d.add_argument("--depth-convention", type=_depth_convention, default="nesting", metavar="nesting|reference",
                           help="what --depth counts: 'nesting', the maximum bracket nesting ([MAX 1 2 ] is 1), or "
                                "'reference', levels as the reference generators count them, the leaves included "
                                "(nesting + 1: their --only_depth 16 is nesting 15) (default nesting)")
            d.add_argument("--ops", type=_listops_ops, default=["MIN", "MAX", "FIRST"],
                           help="comma-separated operators from MIN,MAX,FIRST,MED,SM (default MIN,MAX,FIRST)")
        d.set_defaults(func=_data)
    lm_tools.add_data_wikitext(data_sub)
    add_data_formal(data_sub)

    cmp_ = sub.add_parser("compare", help="one table row and one validation curve per run, on one time axis")
    cmp_.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", type=run_dir)
    cmp_.add_argument("--metric", default=None, help="validation metric (default: the task's main one)")
    cmp_.add_argument("--test", action="store_true", help="also score each run's best checkpoint on the test split "
                                                          "(kept in RUN_DIR/evals.json and reused)")
    cmp_.add_argument("--plot", metavar="PNG", type=output_path("--plot"), help="write the curves here")
    cmp_.add_argument("--title", default=None, help="title of the plot")
    cmp_.add_argument("--markdown", metavar="MD", type=output_path("--markdown"), help="write the table here")
    cmp_.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    cmp_.set_defaults(func=_compare)

    ev = sub.add_parser("eval", help="test-split metrics of a training run's best-validation checkpoint")
    ev.add_argument("run_dir", metavar="RUN_DIR", type=run_dir)
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.add_argument("--split", choices=["train", "valid", "test"], default=None,
                    help="algorithmic tasks and language models: the split to score (default test)")
    ev.add_argument("--checkpoint", choices=["best", "last"], default="best")
    lm_tools.add_eval_lm_flags(ev)
    from .rl_tools import add_eval_flags

    add_eval_flags(ev)
    ev.set_defaults(func=_eval)
    lm_tools.add_generate(sub)


def _op_list(text: str) -> list[str]:
    from ..bench.ops import OP_SPECS

    names = [n.strip() for n in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise ValueError(f"--ops: expected comma-separated op names, got {text!r}")
    unknown = [n for n in names if n not in OP_SPECS]
    if unknown:
        raise ValueError(f"--ops: unknown op {unknown[0]!r}; choose from {', '.join(OP_SPECS)}")
    return names


MAX_SHAPE_ELEMENTS = 2**28  # one B x T x H x D tensor of 'bench ops' (1 GiB of float32)


def _shape_list(text: str) -> list:
    from ..bench.ops import parse_shape

    parts = [p.strip() for p in text.split(";")]
    if not text.strip() or any(not p for p in parts):
        raise ValueError(f"--shapes: expected semicolon-separated BxHxTxD shapes, got {text!r}")
    try:
        shapes = [parse_shape(p) for p in parts]
    except (ValueError, TypeError) as e:
        raise ValueError(str(e) if str(e).startswith("--shapes") else f"--shapes: {e}") from None
    for (B, H, T, D), p in zip(shapes, parts):
        if B * H * T * D > MAX_SHAPE_ELEMENTS:
            raise ValueError(f"--shapes: {p} has {B * H * T * D:.3g} elements per tensor, past the "
                             f"{MAX_SHAPE_ELEMENTS:,} a benchmark tensor may have")
    return shapes


def _sizes(text: str) -> tuple[int, int, int]:
    from .args import number_list

    sizes = number_list("--sizes", low=0, high=10**8, length=3)(text)
    if sum(sizes) == 0:
        raise ValueError(f"--sizes: at least one split must have examples, got {text!r}")
    return tuple(sizes)


def _num_vars(text: str) -> int:
    from .args import number

    value = number("--vars")(text)
    if value not in (3, 5):
        raise ValueError(f"--vars: must be 3 or 5, got {text!r}")
    return value


def _depth_convention(text: str) -> str:
    from ..tasks.listops import DEPTH_CONVENTIONS

    word = text.strip().lower()
    if word not in DEPTH_CONVENTIONS:
        raise ValueError(f"--depth-convention: must be {' or '.join(DEPTH_CONVENTIONS)}, got {text!r}")
    return word


def _depth(text: str) -> int:
    from ..tasks.listops import MAX_DEPTH
    from .args import number

    return number("--depth", low=1, high=MAX_DEPTH)(text)
