"""The language-model commands of the ``fastweights`` command line (``data wikitext-103``, ``eval`` on an LM
run, ``generate``, ``bench generate``; ``train lm`` is generated with every other ``train`` command). Thin:
parses flags and calls into :mod:`fastweights.train.lm` and :mod:`fastweights.tasks.wikitext`."""

from __future__ import annotations

import json
import sys

from .args import number, output_dir, output_path, run_dir, threads


# ---- data ----------------------------------------------------------------------------------------------

def data_wikitext_command(args) -> int:
    from rich.console import Console

    from ..tasks.wikitext import OFFICIAL_URL, WikiTextError, download

    console = Console(stderr=True)
    try:
        download(args.out, url=args.url or OFFICIAL_URL, timeout=args.timeout, log=console.log)
    except WikiTextError as e:
        raise ValueError(f"data wikitext-103: {e}") from None
    return 0


def add_data_wikitext(data_sub) -> None:
    d = data_sub.add_parser("wikitext-103", help="download and verify the official WikiText-103 archive")
    d.add_argument("--out", required=True, metavar="DIR", type=output_dir("--out"),
                   help="directory for wiki.{train,valid,test}.tokens")
    d.add_argument("--url", type=_url, default=None, help="archive address, http(s):// or file:// (default: the "
                                                          "official one)")
    d.add_argument("--timeout", type=number("--timeout", integer=False, low=0, low_open=True, high=86400), default=30.0,
                   help="network timeout in seconds (default 30)")
    d.set_defaults(func=data_wikitext_command)


def _url(text: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https", "file") or not (parts.netloc or parts.path.strip("/")):
        raise ValueError(f"--url: expected an http://, https:// or file:// address, got {text!r}")
    return text.strip()


# ---- eval, generate ------------------------------------------------------------------------------------

def add_eval_lm_flags(ev) -> None:
    ev.add_argument("--mode", choices=["window", "carry"], default=None,
                    help="language models: sliding 'window' (default) or 'carry' the state through the split")
    ev.add_argument("--window", type=number("--window", low=1, high=10**8), default=None,
                    help="language models: words per window / per carried segment (default: the training segment "
                         "length)")
    ev.add_argument("--stride", type=number("--stride", low=1, high=10**8), default=None,
                    help="language models: words between windows (default window / 2); each word is scored once")
    ev.add_argument("--batch-size", type=number("--batch-size", low=1, high=2**20), default=None,
                    help="language models: windows per batch (window mode) or parallel parts (carry mode, default 1)")
    ev.add_argument("--threads", type=threads(), default=None, help="torch threads")


LM_EVAL_FLAGS = {"mode": "--mode", "window": "--window", "stride": "--stride", "batch_size": "--batch-size"}


def eval_lm_command(args) -> int:
    from ..train.lm import evaluate_lm_run

    if args.window is not None and args.stride is not None and args.stride > args.window:
        raise ValueError(f"--stride: must not exceed --window ({args.window}), got {args.stride}")
    num = {k: getattr(args, k) for k in ("window", "stride", "batch_size", "threads")}
    r = evaluate_lm_run(args.run_dir, split=args.split, which=args.checkpoint, mode=args.mode or "window", **num)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    how = (f"sliding window {r['window']}, stride {r['stride']}" if r["mode"] == "window"
           else f"carried state, segments of {r['window']}")
    print(f"language model {r['model']} (preset {r['preset']}), {r['checkpoint']} checkpoint (step {r['step']}), "
          f"{r['split']} split, {how}:")
    print(f"  {'tokens':<11} {r['tokens']:,} (vocabulary {r['vocab_size']:,}; {r['oov']:,} words outside it "
          f"scored as <unk>)")
    print(f"  {'perplexity':<11} {r['perplexity']:.2f}")
    print(f"  {'loss':<11} {r['loss']:.4f} nats/word")
    return 0


def generate_command(args) -> int:
    from ..train.runs import require_kind
    from ..train.lm import generate_text

    require_kind(args.run_dir, "lm", what="generate")
    r = generate_text(args.run_dir, args.prompt, args.tokens, args.temperature, args.top_k, args.seed,
                      args.checkpoint, args.threads)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print((args.prompt + " " if args.prompt else "") + r["text"])
    print(f"[{r['tokens']} words in {r['seconds']:.2f} s, {r['tokens_per_s']:.1f} words/s]", file=sys.stderr)
    return 0


def add_generate(sub) -> None:
    g = sub.add_parser("generate", help="sample text from a language-model run (state carried token by token)")
    g.add_argument("run_dir", metavar="RUN_DIR", type=run_dir)
    g.add_argument("--prompt", default="", help="space-separated words to continue (default: a new line)")
    g.add_argument("--tokens", type=number("--tokens", low=0, high=10**7), default=50,
                   help="words to sample (default 50)")
    g.add_argument("--temperature", type=number("--temperature", integer=False, low=1e-3, high=1e3), default=1.0,
                   help="softmax temperature, in [0.001, 1000] (default 1)")
    g.add_argument("--top-k", type=number("--top-k", low=1, high=10**8), default=None,
                   help="sample among the k likeliest words")
    g.add_argument("--seed", type=number("--seed", low=0, high=2**63 - 1), default=0,
                   help="seed of the sampling (default 0)")
    g.add_argument("--checkpoint", choices=["best", "last"], default="best")
    g.add_argument("--threads", type=threads(), default=None, help="torch threads")
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    g.set_defaults(func=generate_command)


def bench_generate_command(args) -> int:
    from pathlib import Path

    from rich.console import Console

    from ..bench.generate import render_table, run_bench, sources_of
    from ..provenance import cpu_model, machine
    from ..train.runs import require_kind

    if not args.run_dirs and not args.models:
        raise ValueError("--models: give RUN_DIRs, --models or both")
    if not args.models and (args.preset != "tiny" or args.vocab is not None):
        raise ValueError(f"{'--preset' if args.preset != 'tiny' else '--vocab'}: only with --models (a run's own "
                         f"config gives its sizes and vocabulary)")
    for run in args.run_dirs:
        require_kind(run, "lm", what="bench generate")
    if args.baseline is not None and not (Path(args.baseline) / "fastweights" / "__init__.py").is_file():
        raise ValueError(f"--baseline: {args.baseline} holds no fastweights package (fastweights/__init__.py)")
    from ..bench.generate import WIKITEXT103_VOCAB

    vocab = WIKITEXT103_VOCAB if args.vocab is None else args.vocab
    console = Console(stderr=True)
    rows = run_bench(sources_of(args.run_dirs, args.models or [], args.preset, vocab), args.contexts, args.precision,
                     tokens=args.tokens, repeats=args.repeats, rounds=args.rounds, threads=args.threads,
                     top_k=args.top_k, seed=args.seed, baseline=args.baseline, progress=lambda m: console.log(m))
    for r in rows:
        what = f"{r['name']} {r['precision']} context {r['context']}"
        console.log(f"{what}: {r['error']}" if "error" in r else
                    f"{what}: {r['tokens_per_s']:,.1f} tokens/s, {r['ms_per_token']:.2f} ms/token "
                    f"({r['cpu_ms_per_token']:.2f} CPU ms/token), {r['code']} code")
    models = f"preset {args.preset}, vocabulary {vocab:,}" if args.models else "trained runs"
    title = (f"generation, {models}, {args.tokens} words per call, {args.threads} thread(s), median of "
             f"{args.repeats * args.rounds} interleaved calls; {cpu_model()}")
    out = Console() if sys.stdout.isatty() else Console(width=170)
    out.print(render_table(rows, title))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "threads": args.threads, "rows": rows, "baseline": args.baseline}, f,
                      indent=2)
        console.log(f"wrote {args.json}")
    return 0


def add_bench_generate(bench_sub) -> None:
    from .args import number_list
    from .bench_train import _layers, _names

    b = bench_sub.add_parser("generate", help="generation tokens/s and ms/token of language models against the context "
                                              "length, side by side, per precision (optionally against a baseline "
                                              "tree)")
    b.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", type=run_dir,
                   help="language-model runs (their best checkpoints)")
    b.add_argument("--models", type=_names("--models", _layers), default=None,
                   help="comma-separated layer names: randomly initialised models at --preset with --vocab words")
    b.add_argument("--preset", choices=["tiny", "small", "medium"], default="tiny",
                   help="the LM preset of the --models (default tiny)")
    b.add_argument("--vocab", type=number("--vocab", low=2, high=10**7), default=None,
                   help="vocabulary of the --models (default 267,735, WikiText-103's; adaptive softmax with the "
                        "paper's cutoffs scaled to it)")
    b.add_argument("--contexts", type=number_list("--contexts", low=1, high=10**7), default=[64, 4096],
                   help="comma-separated context lengths (default 64,4096)")
    b.add_argument("--tokens", type=number("--tokens", low=1, high=10**7), default=128,
                   help="words sampled per timed call (default 128)")
    b.add_argument("--repeats", type=number("--repeats", low=1, high=10_000), default=3,
                   help="timed calls per case and round (default 3)")
    b.add_argument("--rounds", type=number("--rounds", low=1, high=100), default=1,
                   help="worker processes per code, alternating with the baseline's (default 1)")
    b.add_argument("--precision", type=_names("--precision", ("fp32", "bf16")), default=["fp32"],
                   help="comma-separated precisions: fp32, bf16 (under torch.autocast; default fp32)")
    b.add_argument("--top-k", type=number("--top-k", low=1, high=10**8), default=None,
                   help="sample among the k likeliest words (default: the full distribution)")
    b.add_argument("--seed", type=number("--seed", low=0, high=2**31 - 1), default=0,
                   help="seed of the contexts, the sampling and the --models' weights (default 0)")
    b.add_argument("--threads", type=threads(), default=1, help="torch threads (default 1)")
    b.add_argument("--baseline", metavar="DIR", default=None,
                   help="also time the fastweights package in DIR (e.g. a git worktree of an older commit)")
    b.add_argument("--json", metavar="PATH", type=output_path("--json"), help="also write the rows as JSON")
    b.set_defaults(func=bench_generate_command)
