"""The language-model commands of the ``fastweights`` command line (``data wikitext-103``, ``train lm``,
``eval`` on an LM run, ``generate``, ``bench generate``), registered by :mod:`fastweights.cli`. Thin: parses
flags and calls into :mod:`fastweights.train.lm` and :mod:`fastweights.tasks.wikitext`."""

from __future__ import annotations

import argparse
import json
import sys


def _parse_int(flag, text):
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{flag}: expected an integer, got {text!r}") from None


def _parse_float(flag, text):
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{flag}: expected a number, got {text!r}") from None


def _parse_off_float(flag, text):
    return 0.0 if text.strip().lower() in ("none", "off") else _parse_float(flag, text)


def _parse_budget(flag, text):
    return None if text.strip().lower() in ("none", "off") else _parse_float(flag, text)


def _parse_floats(flag, text):
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated numbers, got {text!r}") from None


def _text(flag, text):
    return text


# flag -> (LMConfig field, parser, help); every value is validated by LMConfig, so a bad one gives one line
# naming the flag.
LM_FLAGS = {
    "--model": ("model", _text, "layer name (default deltanet), see 'fastweights models'"),
    "--preset": ("preset", _text, "small | medium (the paper's sizes) | tiny (for a CPU); default small"),
    "--data": ("data_dir", _text, "directory with wiki.{train,valid,test}.tokens (required)"),
    "--train-file": ("train_file", _text, "training file to use instead of DIR/wiki.train.tokens (its words make "
                                          "the vocabulary)"),
    "--cache-dir": ("cache_dir", _text, "root of the tokenised cache (default $FASTWEIGHTS_CACHE or "
                                        "~/.cache/fastweights)"),
    "--d-model": ("d_model", _parse_int, "model width (preset)"),
    "--layers": ("num_layers", _parse_int, "blocks (preset)"),
    "--heads": ("num_heads", _parse_int, "heads (preset)"),
    "--head-dim": ("head_dim", _parse_int, "size of one head (preset)"),
    "--d-ff": ("d_ff", _parse_int, "feedforward width (preset)"),
    "--dropout": ("dropout", _parse_float, "dropout (preset; 0.1)"),
    "--segment-len": ("segment_len", _parse_int, "words per training segment (preset)"),
    "--batch-size": ("batch_size", _parse_int, "streams per batch (preset)"),
    "--steps": ("steps", _parse_int, "optimizer steps; the cosine decay ends there (preset)"),
    "--lr": ("lr", _parse_float, "Adam peak learning rate (preset)"),
    "--min-lr": ("min_lr", _parse_float, "learning rate at the end of the cosine (default 0)"),
    "--betas": ("betas", _parse_floats, "Adam betas B1,B2 (default 0.9,0.999)"),
    "--warmup": ("warmup_steps", _parse_int, "linear warm-up steps (preset)"),
    "--grad-clip": ("grad_clip", _parse_off_float, "max gradient norm, or none (preset; 0.25)"),
    "--seed": ("seed", _parse_int, "seed of weights and dropout (default 0)"),
    "--out": ("out", _text, "run directory (default runs/lm-MODEL-PRESET-sSEED)"),
    "--eval-interval": ("eval_interval", _parse_int, "steps between validations and checkpoints (default 500)"),
    "--eval-tokens": ("eval_tokens", _parse_int, "validate on the first N validation words during training "
                                                 "(0: all; preset)"),
    "--save-interval": ("save_interval", _parse_int, "extra checkpoints every N steps"),
    "--log-interval": ("log_interval", _parse_int, "steps between train-metric records (default 50)"),
    "--eval-batch-size": ("eval_batch_size", _parse_int, "windows per evaluation batch (default 16)"),
    "--threads": ("threads", _parse_int, "torch threads (default: torch's choice)"),
    "--time-budget": ("time_budget_minutes", _parse_budget, "stop after the first step past MINUTES of training "
                                                            "time, summed across --resume"),
    "--budget-clock": ("budget_clock", _text, "what --time-budget counts: 'wall' (default) or process 'cpu' time"),
}
_METAVARS = {"--out": "DIR", "--data": "DIR", "--train-file": "FILE", "--cache-dir": "DIR",
             "--time-budget": "MINUTES", "--budget-clock": "wall|cpu", "--preset": "small|medium|tiny"}


def _config_error(e) -> ValueError:
    flags = {field: flag for flag, (field, _, _) in LM_FLAGS.items()}
    flags["carry_state"] = "--carry-state"
    flag = flags.get(getattr(e, "field", None))
    return ValueError(f"{flag}: {e}" if flag else str(e))


def train_lm_command(args) -> int:
    from .train.lm import LMTrainError, resume_lm_config, train_lm
    from .train.lm_config import LMConfig, LMConfigError

    given = {}
    for flag, (field, parse, _) in LM_FLAGS.items():
        text = getattr(args, field)
        if text is not None:
            given[field] = parse(flag, text)
    if args.carry_state:
        given["carry_state"] = True
    try:
        if args.resume:
            if "out" not in given:
                raise ValueError("--resume: give the run directory with --out")
            cfg = resume_lm_config(given["out"], given)
        else:
            given.setdefault("out", f"runs/lm-{given.get('model', 'deltanet')}-{given.get('preset', 'small')}"
                                    f"-s{given.get('seed', 0)}")
            cfg = LMConfig(**given)
        summary = train_lm(cfg, resume=args.resume)
    except LMConfigError as e:
        raise _config_error(e) from None
    except LMTrainError as e:
        print(f"fastweights: error: {e}", file=sys.stderr)
        return 1
    return 0 if summary["status"] in ("completed", "stopped") else 1


def add_train_lm(train_sub) -> None:
    t = train_sub.add_parser("lm", help="word-level language model on WikiText-103 (adaptive softmax, tied "
                                        "embeddings, warm-up + cosine)")
    for flag, (field, _, help_) in LM_FLAGS.items():
        t.add_argument(flag, dest=field, default=None, metavar=_METAVARS.get(flag, field.upper()), help=help_)
    t.add_argument("--carry-state", action="store_true",
                   help="carry the fast weights / recurrent state across consecutive segments (detached)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (its saved config is used)")
    t.set_defaults(func=train_lm_command)


# ---- data ----------------------------------------------------------------------------------------------

def data_wikitext_command(args) -> int:
    from rich.console import Console

    from .tasks.wikitext import OFFICIAL_URL, WikiTextError, download

    console = Console(stderr=True)
    try:
        download(args.out, url=args.url or OFFICIAL_URL, timeout=args.timeout, log=console.log)
    except WikiTextError as e:
        raise ValueError(f"data wikitext-103: {e}") from None
    return 0


def add_data_wikitext(data_sub) -> None:
    d = data_sub.add_parser("wikitext-103", help="download and verify the official WikiText-103 archive")
    d.add_argument("--out", required=True, metavar="DIR", help="directory for wiki.{train,valid,test}.tokens")
    d.add_argument("--url", default=None, help="archive address (default: the official one)")
    d.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds (default 30)")
    d.set_defaults(func=data_wikitext_command)


# ---- eval, generate ------------------------------------------------------------------------------------

def add_eval_lm_flags(ev) -> None:
    ev.add_argument("--mode", choices=["window", "carry"], default=None,
                    help="language models: sliding 'window' (default) or 'carry' the state through the split")
    ev.add_argument("--window", default=None, help="language models: words per window / per carried "
                                                             "segment (default: the training segment length)")
    ev.add_argument("--stride", default=None,
                    help="language models: words between windows (default window / 2); each word is scored once")
    ev.add_argument("--batch-size", default=None,
                    help="language models: windows per batch (window mode) or parallel parts (carry mode, default 1)")
    ev.add_argument("--threads", default=None, help="torch threads")


LM_EVAL_FLAGS = {"mode": "--mode", "window": "--window", "stride": "--stride", "batch_size": "--batch-size"}


def eval_lm_command(args) -> int:
    from .train.lm import evaluate_lm_run

    num = {k: None if getattr(args, k) is None else _parse_int(f"--{k.replace('_', '-')}", getattr(args, k))
           for k in ("window", "stride", "batch_size", "threads")}
    if num["threads"] is not None and num["threads"] < 1:
        raise ValueError(f"--threads must be a positive integer, got {num['threads']}")
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
    from .train.lm import generate_text, is_lm_run

    if not is_lm_run(args.run_dir):
        raise ValueError(f"{args.run_dir}: not a language-model run (train one with 'fastweights train lm')")
    tokens = _parse_int("--tokens", args.tokens)
    temperature = _parse_float("--temperature", args.temperature)
    top_k = None if args.top_k is None else _parse_int("--top-k", args.top_k)
    seed = _parse_int("--seed", args.seed)
    threads = None if args.threads is None else _parse_int("--threads", args.threads)
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {threads}")
    r = generate_text(args.run_dir, args.prompt, tokens, temperature, top_k, seed, args.checkpoint, threads)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print((args.prompt + " " if args.prompt else "") + r["text"])
    print(f"[{r['tokens']} words in {r['seconds']:.2f} s, {r['tokens_per_s']:.1f} words/s]", file=sys.stderr)
    return 0


def _positive(flag):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            v = 0
        if v < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {text!r}")
        return v

    return parse


def add_generate(sub) -> None:
    g = sub.add_parser("generate", help="sample text from a language-model run (state carried token by token)")
    g.add_argument("run_dir", metavar="RUN_DIR")
    g.add_argument("--prompt", default="", help="space-separated words to continue (default: a new line)")
    g.add_argument("--tokens", default="50", help="words to sample (default 50)")
    g.add_argument("--temperature", default="1.0", help="softmax temperature (default 1)")
    g.add_argument("--top-k", default=None, help="sample among the k likeliest words")
    g.add_argument("--seed", default="0", help="seed of the sampling (default 0)")
    g.add_argument("--checkpoint", choices=["best", "last"], default="best")
    g.add_argument("--threads", default=None, help="torch threads")
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    g.set_defaults(func=generate_command)


def bench_generate_command(args) -> int:
    import torch

    from .train.lm import generation_speed, load_lm_run

    torch.set_num_threads(args.threads)
    rows = []
    for run in args.run_dirs:
        cfg, model, corpus, ptr = load_lm_run(run, "best")
        for rep in range(args.repeats):
            for ctx in args.contexts:
                r = generation_speed(model, ctx, args.tokens, seed=rep)
                rows.append({"run_dir": run, "model": cfg.model, "repeat": rep, **r})
                print(f"{cfg.model:<12} context {ctx:>6}: {r['tokens_per_s']:8.1f} tokens/s wall, "
                      f"{r['tokens_per_cpu_s']:8.1f} tokens/CPU-s", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "rows": rows}, f, indent=2)
    return 0


def add_bench_generate(bench_sub) -> None:
    b = bench_sub.add_parser("generate", help="generation tokens/s of language-model runs at several context lengths")
    b.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    b.add_argument("--contexts", type=lambda t: [_positive("--contexts")(x) for x in t.split(",")],
                   default=[64, 4096], help="comma-separated context lengths (default 64,4096)")
    b.add_argument("--tokens", type=_positive("--tokens"), default=256, help="words sampled per measurement")
    b.add_argument("--repeats", type=_positive("--repeats"), default=3)
    b.add_argument("--threads", type=_positive("--threads"), default=1)
    b.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    b.set_defaults(func=bench_generate_command)
