"""The converged study's table and curves (issue 18), from a ``converged.sh`` runs directory.

    python results/algorithmic/scripts/converged_report.py RUNS_DIR [--out DIR] [--settings d15,v5]

RUNS_DIR holds run directories named ``SETTING-MODEL-sSEED``. Per run: how it stopped (a run that is not
``completed`` is listed as unfinished, never as a result), steps, CPU-hours (``train_seconds`` on the CPU budget
clock, which adds up across ``--resume``), the best validation and its step, the test score of the best checkpoint
where ``fastweights compare --test`` (or ``fastweights eval``) has kept one in ``evals.json``, and the slope of
validation accuracy over the run's last 25% of steps (least squares, points per 1,000 steps: a run still rising
at its cap shows it). Code execution reports print and sequence accuracy, ListOps accuracy.

Writes DIR/converged.md (the table, also printed) and DIR/converged_SETTING.png (validation against steps, one
line per run); DIR defaults to results/algorithmic.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

NAME = re.compile(r"^(?P<setting>[a-z0-9]+)-(?P<model>[a-z0-9-]+)-s(?P<seed>\d+)$")
TITLES = {"d15": "ListOps, the paper's depth 15", "v5": "code execution, 5 variables"}


def read_run(run: Path) -> dict | None:
    m = NAME.match(run.name)
    if not m or not (run / "summary.json").is_file() or not (run / "metrics.jsonl").is_file():
        return None
    summary = json.loads((run / "summary.json").read_text())
    valid = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("split") == "valid"]
    metric = "print_acc" if valid and "print_acc" in valid[0] else "acc"
    curve = sorted((r["step"], 100 * r[metric]) for r in valid if metric in r)
    test = None
    try:
        kept = json.loads((run / "evals.json").read_text())
        for entry in kept.values():
            res = entry.get("result", {})
            if res.get("split") == "test" and res.get("step") == summary.get("best_step"):
                test = res
    except (OSError, ValueError):
        pass
    return {"run": run.name, **m.groupdict(), "summary": summary, "metric": metric, "curve": curve, "test": test}


def late_slope(curve: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of accuracy over the last 25% of steps, in points per 1,000 steps."""
    if not curve:
        return None
    last = curve[-1][0]
    pts = [(s, a) for s, a in curve if s >= 0.75 * last]
    if len(pts) < 2:
        return None
    ms = sum(s for s, _ in pts) / len(pts)
    ma = sum(a for _, a in pts) / len(pts)
    var = sum((s - ms) ** 2 for s, _ in pts)
    return 1000 * sum((s - ms) * (a - ma) for s, a in pts) / var if var else None


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def row(r: dict) -> str:
    s = r["summary"]
    best = s.get("best_valid") or {}
    if r["metric"] == "print_acc":
        valid = f"{pct(best.get('print_acc'))} / {pct(best.get('seq_acc'))}"
        test = "–" if r["test"] is None else f"{pct(r['test'].get('print_acc'))} / {pct(r['test'].get('seq_acc'))}"
    else:
        valid = pct(best.get("acc"))
        test = "–" if r["test"] is None else pct(r["test"].get("acc"))
    hours = s.get("train_seconds", 0) / 3600
    clock = "" if s.get("budget_clock") == "cpu" else " (wall)"
    slope = late_slope(r["curve"])
    status = s.get("status", "?")
    stopped = s.get("stopped") or "step cap"
    how = stopped if status == "completed" else f"**unfinished** ({status})"
    return (f"| {r['setting']} | {r['model']} | {r['seed']} | {how} | {s.get('step', 0):,} | {hours:.2f}{clock} | "
            f"{valid} | {s.get('best_step', '–')} | {test} | {'–' if slope is None else f'{slope:+.2f}'} |")


def plot(runs: list[dict], setting: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in runs:
        if r["curve"]:
            steps, acc = zip(*r["curve"])
            ax.plot(steps, acc, label=f"{r['model']} s{r['seed']}", linestyle="-" if r["seed"] == "0" else "--")
    metric = "print accuracy" if runs and runs[0]["metric"] == "print_acc" else "accuracy"
    ax.set(xlabel="training steps", ylabel=f"validation {metric} (%)", ylim=(0, 100),
           title=TITLES.get(setting, setting))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--settings", default="d15,v5")
    args = ap.parse_args(argv)
    root = Path(args.runs)
    if not root.is_dir():
        ap.error(f"RUNS_DIR {root}: not a directory")
    settings = [s for s in args.settings.split(",") if s]
    runs = [r for r in (read_run(p) for p in sorted(root.iterdir()) if p.is_dir()) if r and r["setting"] in settings]
    if not runs:
        print(f"no SETTING-MODEL-sSEED runs of {settings} with records in {root}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| setting | model | seed | stopped | steps | CPU-h | best valid (print / seq for code exec) | at step | "
             "test, best ckpt | slope, last 25% (points / 1k steps) |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [row(r) for r in runs]
    table = "\n".join(lines) + "\n"
    (out / "converged.md").write_text(table)
    print(table)
    for setting in settings:
        mine = [r for r in runs if r["setting"] == setting]
        if mine:
            plot(mine, setting, out / f"converged_{setting}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
