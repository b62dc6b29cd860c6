"""Tables and figure of results/formal.md from the study's run records (results/formal/records/runs).

    python results/formal/scripts/report.py [--out DIR]

Writes results/formal/records/study.json (one row per run), results/formal/figures/accuracy.png and the tables
between the ``<!-- tables:begin -->`` and ``<!-- tables:end -->`` markers of results/formal.md; with ``--out DIR``
writes DIR/records/study.json, DIR/figures/accuracy.png and DIR/tables.md instead (results/ untouched). Accuracies are
of each run's best checkpoint (the run's own choice: the highest mean of the valid and the long-split string
accuracy), on the valid split (lengths of training, 1-50) and on the long split (51-100; n for counter-2/3).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from study import LANGUAGES, LRS, MODELS, SEEDS, STEPS, chosen_lr, name  # noqa: E402

ROOT = HERE.parent
RUNS = ROOT / "records" / "runs"
DOC = ROOT.parent / "formal.md"


def load(run: str) -> dict | None:
    try:
        s = json.loads((RUNS / run / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if s.get("status") != "completed":
        return None
    b = s.get("best_valid") or {}
    return {"run": run, "acc": b.get("acc", 0.0), "long_acc": b.get("long_acc", 0.0), "steps": s["step"],
            "best_step": s.get("best_step"), "seconds": s.get("train_seconds", 0.0), "stopped": s.get("stopped")}


def pct(values: list) -> str:
    if not values:
        return "–"
    m = 100 * statistics.mean(values)
    if len(values) == 1:
        return f"{m:.1f}"
    return f"{m:.1f} ± {100 * statistics.stdev(values):.1f}"


def collect() -> dict:
    rows, grid, main = [], {}, {}
    for lang in LANGUAGES:
        for m in MODELS:
            for lr in LRS:
                r = load(name(m, lang, lr, 0))
                grid[(m, lang, lr)] = r
                if r:
                    rows.append({"model": m, "language": lang, "lr": lr, "seed": 0, **r})
            lr = chosen_lr(RUNS, m, lang)
            seeds = []
            if lr is not None:
                for s in SEEDS:
                    r = load(name(m, lang, lr, s))
                    if r:
                        seeds.append(r)
                        if s:
                            rows.append({"model": m, "language": lang, "lr": lr, "seed": s, **r})
            main[(m, lang)] = (lr, seeds)
    return {"rows": rows, "grid": grid, "main": main}


def tables(data: dict) -> str:
    grid, main = data["grid"], data["main"]
    out = []
    head = "| model | " + " | ".join(LANGUAGES) + " |"
    sep = "|---|" + "---:|" * len(LANGUAGES)
    for key, title in (("long_acc", "Long split (lengths 51-100; n 51-100 for counter-2/3): string accuracy, %, "
                                    "mean ± sd over seeds"),
                       ("acc", "Valid split (lengths of training, 1-50): string accuracy, %, mean ± sd over seeds")):
        out += [f"**{title}**", "", head, sep]
        for m in MODELS:
            cells = []
            for lang in LANGUAGES:
                lr, seeds = main[(m, lang)]
                vals = [r[key] for r in seeds]
                cell = pct(vals)
                if vals and len(vals) < len(SEEDS):
                    cell += f" ({len(vals)} seed{'s' if len(vals) > 1 else ''})"
                cells.append(cell)
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("")
    out += ["**Learning-rate grid (seed 0): long-split accuracy, %, at " + " / ".join(LRS) +
            "; the chosen rate in bold**", "", head, sep]
    for m in MODELS:
        cells = []
        for lang in LANGUAGES:
            lr_best = main[(m, lang)][0]
            parts = []
            for lr in LRS:
                r = grid[(m, lang, lr)]
                txt = "…" if r is None else f"{100 * r['long_acc']:.0f}"
                parts.append(f"**{txt}**" if lr == lr_best else txt)
            cells.append(" / ".join(parts))
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    out.append("")
    rows = data["rows"]
    done = len(rows)
    planned = len(MODELS) * len(LANGUAGES) * (len(LRS) + len(SEEDS) - 1)
    secs = sum(r["seconds"] for r in rows)
    early = sum(1 for r in rows if r["stopped"])
    out += [f"Runs finished: {done} of {planned} planned; {early} stopped early at 100% on both splits, the others "
            f"ran their {STEPS:,} steps. Training time summed over the finished runs: {secs / 3600:.2f} h (each "
            "run's wall clock, validation included, one torch thread, two runs side by side on a machine shared "
            "with other work; see the note on threads above).", ""]
    return "\n".join(out)


def figure(data: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(15, 5.2))
    for ax, key, title in zip(axes, ("acc", "long_acc"), ("valid (lengths 1-50)", "long split (51-100)")):
        grid = np.full((len(MODELS), len(LANGUAGES)), np.nan)
        for i, m in enumerate(MODELS):
            for j, lang in enumerate(LANGUAGES):
                vals = [r[key] for r in data["main"][(m, lang)][1]]
                if vals:
                    grid[i, j] = 100 * statistics.mean(vals)
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        for i in range(len(MODELS)):
            for j in range(len(LANGUAGES)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center",
                            color="black" if grid[i, j] > 60 else "white", fontsize=9)
        ax.set_xticks(range(len(LANGUAGES)), LANGUAGES, rotation=30, ha="right")
        ax.set_yticks(range(len(MODELS)), MODELS)
        ax.set_title(f"string accuracy, %, {title}; mean over seeds")
    fig.colorbar(im, ax=axes, shrink=0.8)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="write here instead of into results/")
    args = p.parse_args(argv)
    out = args.out or ROOT
    data = collect()
    (out / "records").mkdir(parents=True, exist_ok=True)
    (out / "records" / "study.json").write_text(json.dumps(data["rows"], indent=1) + "\n")
    figure(data, out / "figures" / "accuracy.png")
    if args.out is not None:
        (out / "tables.md").write_text(tables(data) + "\n")
        print(tables(data))
        return 0
    text = DOC.read_text()
    begin, end = "<!-- tables:begin -->", "<!-- tables:end -->"
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        post = rest.split(end, 1)[1]
        DOC.write_text(f"{pre}{begin}\n{tables(data)}\n{end}{post}")
    else:
        print(tables(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
