"""The WikiText-103 table and figure of results/wikitext103.md from the tiny-preset run records.

    python results/wikitext103/scripts/collect.py --runs runs/lm     # after run_all.sh: collect, then tabulate
    python results/wikitext103/scripts/collect.py                    # tabulate the committed records again
    python results/wikitext103/scripts/collect.py --out OUT_DIR      # ... writing under OUT_DIR instead

With ``--runs`` (the directory run_all.sh wrote), every finished ``RUNS/tiny-MODEL`` is first copied into
``OUT/records/runs/MODEL/`` (summary, metrics, curves, config, the eval JSONs, the text sample and the
training log), with ``RUNS/bench_generate*.json`` into ``OUT/records/``. Then, from the run records in
``--records`` (default: ``OUT/records/runs`` after a copy, else the committed results/wikitext103/records/runs),
it writes one table (``OUT/records/table.md`` + ``table.json``, the unigram baseline included) and one picture
of every model's perplexity against CPU time (``OUT/figures/valid_curves.png``). OUT defaults to
results/wikitext103. The unigram baseline reads the data: ``--data``, default ``$FASTWEIGHTS_DATA/wikitext-103``
(FASTWEIGHTS_DATA defaults to ``../shared/data`` beside the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
from pathlib import Path

from fastweights.layers import layer_names
from fastweights.tasks.wikitext import load_corpus
from fastweights.train.lm import unigram_perplexity

STUDY = Path(__file__).resolve().parents[1]  # results/wikitext103
REPO = STUDY.parents[1]
FWPS = ("lt", "deltanet", "delta-mlp", "delta-delta", "delta-rnn", "delta-lstm", "rdn")
# Irie et al. 2021, small setting, full WikiText-103 (as quoted in DESIGN.md, not yet checked against the paper)
PAPER_TEST = {"transformer": 34.1, "lt": 38.3, "deltanet": 35.2, "delta-mlp": 36.8, "delta-rnn": 35.0,
              "delta-lstm": 33.8, "rdn": 35.2}
BENCH_FILES = ("bench_generate.json", "bench_generate2.json")


def default_data() -> Path:
    """``$FASTWEIGHTS_DATA/wikitext-103``; FASTWEIGHTS_DATA defaults to ``shared/data`` beside the repository."""
    return Path(os.environ.get("FASTWEIGHTS_DATA") or REPO.parent / "shared" / "data") / "wikitext-103"


def copy_runs(runs: Path, records: Path) -> None:
    """``runs/tiny-MODEL`` (and its ``tiny-MODEL.*`` files beside it) -> ``records/runs/MODEL``."""
    for model in layer_names():
        run = runs / f"tiny-{model}"
        if not (run / "summary.json").exists():
            continue
        dst = records / "runs" / model
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("summary.json", "metrics.jsonl", "curves.png", "config.json"):
            shutil.copy(run / name, dst / name)
        for suffix in ("eval-valid.json", "eval-test.json", "sample.txt", "log"):
            src = runs / f"tiny-{model}.{suffix}"
            if src.exists():
                shutil.copy(src, dst / suffix)
    for name in BENCH_FILES:
        if (runs / name).exists():
            shutil.copy(runs / name, records / name)


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", help="run_all.sh's output directory (e.g. runs/lm): copy its runs into the records "
                                  "first")
    p.add_argument("--records", help="the run records to tabulate (directories named by model; default "
                                     "OUT/records/runs with --runs, else results/wikitext103/records/runs)")
    p.add_argument("--out", default=str(STUDY), help="study directory written: OUT/records/table.{md,json}, "
                                                     "OUT/figures/valid_curves.png (default results/wikitext103)")
    p.add_argument("--bench", help="comma-separated 'fastweights bench generate --json' files (rows pooled; "
                                   "default the bench_generate*.json beside the records)")
    p.add_argument("--data", default=None, help="WikiText-103 directory (default $FASTWEIGHTS_DATA/wikitext-103)")
    p.add_argument("--cache-dir", help="corpus cache (default RUNS/cache with --runs, else runs/lm/cache)")
    args = p.parse_args()
    out = Path(args.out)
    (out / "records").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    if args.runs:
        copy_runs(Path(args.runs), out / "records")
    records = Path(args.records or (out / "records" / "runs" if args.runs else STUDY / "records" / "runs"))
    bench_files = (args.bench.split(",") if args.bench else
                   [records.parent / name for name in BENCH_FILES])
    data = Path(args.data) if args.data else default_data()
    cache = args.cache_dir or Path(args.runs or "runs/lm") / "cache"
    corpus = load_corpus(data, data / "wiki.train.prefix.tokens", cache)
    V = len(corpus.vocab)
    uni = {s: unigram_perplexity(corpus.train, corpus[s], V) for s in ("valid", "test")}
    bench = {}
    for path in map(Path, bench_files):
        if path.exists():
            for r in json.loads(path.read_text())["rows"]:
                bench.setdefault(r["model"], {}).setdefault(r["context"], []).append(r)
    rows = []
    for model in layer_names():
        run = records / model
        if not (run / "summary.json").exists():
            continue
        s = json.loads((run / "summary.json").read_text())
        ev = {sp: json.loads((run / f"eval-{sp}.json").read_text()) for sp in ("valid", "test")
              if (run / f"eval-{sp}.json").exists()}
        at300 = [x["ppl"] for x in read_metrics(run) if x["split"] == "valid" and x["step"] == 300]
        row = {"valid32k_at_300": at300[0] if at300 else None, "model": model, "parameters": s["parameters"],
               "steps": s["step"], "total_steps": s["total_steps"],
               "cpu_seconds": s["train_seconds"], "train_words": s["train_words"], "epochs": s["epochs"],
               "words_per_cpu_s": s["words_per_s"], "stopped": s["stopped"],
               "valid_ppl": ev.get("valid", {}).get("perplexity"), "test_ppl": ev.get("test", {}).get("perplexity"),
               "paper_test_ppl": PAPER_TEST.get(model)}
        if model in bench:
            for ctx, rs in bench[model].items():
                row[f"gen_tok_s_{ctx}"] = statistics.median(r["tokens_per_s"] for r in rs)
                row[f"gen_tok_cpu_s_{ctx}"] = statistics.median(r["tokens_per_cpu_s"] for r in rs)
                row[f"gen_n_{ctx}"] = len(rs)
                row[f"gen_range_{ctx}"] = [min(r["tokens_per_s"] for r in rs), max(r["tokens_per_s"] for r in rs)]
        rows.append(row)
    if not rows:
        raise SystemExit(f"collect.py: no run records (MODEL/summary.json) in {records}")
    table = {"vocab_size": V, "oov": corpus.meta["oov"], "unk": corpus.meta["unk"], "tokens": corpus.meta["tokens"],
             "unigram": uni, "rows": rows}
    (out / "records" / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / "records" / "table.md").write_text(render(table) + "\n" + render_gen(table))
    plot(rows, records, uni["valid"]["perplexity"], out / "figures" / "valid_curves.png")
    print(render(table))
    print(render_gen(table))


def _f(x, fmt):
    return "—" if x is None else format(x, fmt)


def render(out) -> str:
    half = out["unigram"]["valid"]["perplexity"] / 2
    lines = ["| model | params | steps | CPU-s | words/CPU-s | epochs | valid ppl | test ppl | < half unigram | "
             "valid ppl at step 300 (first 32k words) | gen tok/s @64 | gen tok/s @4096 | ratio 64/4096 | "
             "paper test ppl (full data) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|"]
    for r in sorted(out["rows"], key=lambda r: r["valid_ppl"] or 1e9):
        g64, g4k = r.get("gen_tok_s_64"), r.get("gen_tok_s_4096")
        ratio = g64 / g4k if g64 and g4k else None
        ok = "yes" if r["valid_ppl"] is not None and r["valid_ppl"] < half else "NO"
        lines.append(f"| {r['model']} | {r['parameters'] / 1e6:.2f}M | {r['steps']} | {r['cpu_seconds']:.0f} | "
                     f"{r['words_per_cpu_s']:,.0f} | {r['epochs']:.2f} | {_f(r['valid_ppl'], '.1f')} | "
                     f"{_f(r['test_ppl'], '.1f')} | {ok} | {_f(r['valid32k_at_300'], '.1f')} | {_f(g64, '.0f')} | "
                     f"{_f(g4k, '.0f')} | {_f(ratio, '.2f')} | "
                     f"{_f(r['paper_test_ppl'], '.1f')} |")
    u = out["unigram"]
    lines.append(f"| unigram (add-one, prefix counts) | — | — | — | — | — | {u['valid']['perplexity']:.1f} | "
                 f"{u['test']['perplexity']:.1f} | — | — | — | — | — | — |")
    return "\n".join(lines) + "\n"


def render_gen(out) -> str:
    lines = ["| model | tok/s @64 (wall) | tok/s @4096 (wall) | ratio | tok/CPU-s @64 | tok/CPU-s @4096 | "
             "ratio (CPU) | "
             "measurements per context | wall range @64 | wall range @4096 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in out["rows"]:
        if "gen_tok_s_64" not in r:
            continue
        w64, w4k, c64, c4k = r["gen_tok_s_64"], r["gen_tok_s_4096"], r["gen_tok_cpu_s_64"], r["gen_tok_cpu_s_4096"]
        lines.append(f"| {r['model']} | {w64:.0f} | {w4k:.0f} | {w64 / w4k:.2f} | {c64:.0f} | {c4k:.0f} | "
                     f"{c64 / c4k:.2f} | {r['gen_n_64']} | {r['gen_range_64'][0]:.0f}–{r['gen_range_64'][1]:.0f} | "
                     f"{r['gen_range_4096'][0]:.0f}–{r['gen_range_4096'][1]:.0f} |")
    return "\n".join(lines) + "\n"


def plot(rows, records: Path, unigram_valid: float, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    for r in rows:
        recs = read_metrics(records / r["model"])
        val = [x for x in recs if x["split"] == "valid"]
        tr = [x for x in recs if x["split"] == "train"]
        style = "-" if r["model"] in FWPS else "--"
        ax1.plot([x["train_seconds"] for x in val], [x["ppl"] for x in val], style, marker="o", markersize=3,
                 label=r["model"])
        ax2.plot([x["train_seconds"] for x in tr], [x["ppl"] for x in tr], style, label=r["model"])
    for ax, title in ((ax1, "validation (first 32,768 words)"), (ax2, "training (running mean per 25 steps)")):
        ax.axhline(unigram_valid / 2, color="grey", lw=0.8, ls=":", label="half the unigram (valid)")
        ax.set_yscale("log")
        ax.set_ylim(top=3000)
        ax.set_xlabel("training CPU seconds (1 thread)")
        ax.set_ylabel("perplexity")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.suptitle("WikiText-103, tiny preset, 2.75 MB training prefix, 5 CPU-minutes per model")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
