"""Side-by-side view of several finished runs: one table row and one learning curve per run.

``fastweights compare RUN_DIR... --plot PNG --markdown MD`` is how ``results/algorithmic.md`` is made:
each run's steps, time spent on its budget clock, best validation score (and, with ``test=True``, the
test-split score of its best-validation checkpoint), and a figure of the training loss and the validation
metric against the time spent, so that runs given the same budget can be read off one axis.

Runs written before records carried ``train_seconds`` are placed on the time axis by scaling their
steps to the run's total training time (evaluations are then spread evenly; the plot says so).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .checkpoint import CheckpointError
from .data import MAIN_METRIC
from .runlog import read_metrics

LOWER_IS_BETTER = ("loss", "perplexity", "ppl")


def load_run(run_dir: str | os.PathLike) -> dict:
    """``{"dir", "name", "kind", "config", "summary", "records"}`` of one run directory (a one-line ValueError
    if it is not one, or its config.json names no run kind)."""
    from .runs import kind_of_record, read_record

    if Path(run_dir).is_dir() and not (Path(run_dir) / "config.json").exists():
        raise ValueError(f"{run_dir}: not a run directory (no config.json)")
    config = read_record(run_dir)
    kind = kind_of_record(config)
    if kind is None:
        raise ValueError(f"{run_dir}: config.json names no known run kind (supervised, lm, rl)")
    run_dir = Path(run_dir)
    summary = {}
    if (run_dir / "summary.json").exists():
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except ValueError:
            summary = {}
    return {"dir": str(run_dir), "name": run_dir.name, "kind": kind, "config": config, "summary": summary,
            "records": read_metrics(run_dir)}


def default_metric(run: dict) -> str:
    return MAIN_METRIC.get(run["config"].get("task"), "loss")


def _minutes(run: dict, recs: list[dict]) -> tuple[list[float], bool]:
    """Minutes on the run's budget clock at each record, and whether they were measured (not scaled)."""
    if recs and all(r.get("train_seconds") is not None for r in recs):
        return [r["train_seconds"] / 60 for r in recs], True
    total_s, last = run["summary"].get("train_seconds"), run["summary"].get("step")
    if not total_s or not last:
        last = max((r["step"] for r in run["records"]), default=1)
        total_s = 60.0 * last  # no clock at all: one "minute" per step, flagged as not measured
    return [r["step"] / last * total_s / 60 for r in recs], False


def summarize_run(run: dict, metric: str | None = None, test: bool = False) -> dict:
    """One table row: model, steps, minutes, best validation ``metric`` (and its step), final validation
    ``metric``; with ``test`` also the test metrics of the best-validation checkpoint."""
    metric = metric or default_metric(run)
    valid = [r for r in run["records"] if r.get("split") == "valid" and r.get(metric) is not None]
    lower = metric in LOWER_IS_BETTER
    best = (min if lower else max)(valid, key=lambda r: r[metric]) if valid else None
    s, cfg = run["summary"], run["config"]
    row = {"run": run["name"], "model": cfg.get("model"), "steps": s.get("step"),
           "minutes": round(s["train_seconds"] / 60, 2) if s.get("train_seconds") is not None else None,
           "clock": s.get("budget_clock", cfg.get("budget_clock", "wall")), "metric": metric,
           "best_valid": best[metric] if best else None, "best_step": best["step"] if best else None,
           "final_valid": valid[-1][metric] if valid else None, "stopped": s.get("stopped")}
    if test:
        from .loop import evaluate_run

        if run.get("kind", "supervised") != "supervised":
            raise ValueError(f"{run['dir']} is {'a language-model' if run['kind'] == 'lm' else 'an RL'} run; "
                             f"only algorithmic-task runs are scored on a test split here (use 'fastweights eval')")

        try:
            row["test"] = evaluate_run(run["dir"], "test", "best", cache=True)
        except (CheckpointError, ValueError) as e:
            row["test"] = {"error": str(e)}
    return row


def plot_runs(runs: list[dict], out: str | os.PathLike, metric: str | None = None, title: str | None = None) -> None:
    """Three panels, one line per run: the training loss (every logged record) and the validation ``metric``
    against minutes on the budget clock, and the validation ``metric`` against training steps (what each
    model learns per batch, whatever a step costs). Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = metric or default_metric(runs[0])
    fig, (ax_loss, ax_val, ax_steps) = plt.subplots(1, 3, figsize=(16, 4.5))
    measured_all = True
    models = [run["config"].get("model", run["name"]) for run in runs]
    for i, run in enumerate(runs):  # a run is labelled by its model, and by its directory too where models repeat
        color = f"C{i % 10}"
        label = models[i] if models.count(models[i]) == 1 else f"{models[i]} ({run['dir']})"
        for ax, split, key, style in ((ax_loss, "train", "loss", "-"), (ax_val, "valid", metric, "o-")):
            recs = [r for r in run["records"] if r.get("split") == split and r.get(key) is not None]
            if not recs:
                continue
            xs, measured = _minutes(run, recs)
            measured_all &= measured
            ax.plot(xs, [r[key] for r in recs], style, color=color, markersize=3, linewidth=1.2, label=label)
        recs = [r for r in run["records"] if r.get("split") == "valid" and r.get(metric) is not None]
        ax_steps.plot([r["step"] for r in recs], [r[metric] for r in recs], "o-", color=color, markersize=3,
                      linewidth=1.2, label=label)
    clock = {r["summary"].get("budget_clock", "wall") for r in runs}
    xlabel = (f"{'CPU minutes' if clock == {'cpu'} else 'minutes'} of training"
              f"{'' if measured_all else ' (steps scaled to each run’s total)'}")
    ax_loss.set_ylabel("training loss (nats)")
    ax_val.set_ylabel(f"validation {metric}")
    ax_steps.set_ylabel(f"validation {metric}")
    for ax in (ax_val, ax_steps):
        if metric not in LOWER_IS_BETTER:
            ax.set_ylim(0, 1)
    for ax in (ax_loss, ax_val):
        ax.set_xlabel(xlabel)
    ax_steps.set_xlabel("training steps")
    for ax in (ax_loss, ax_val, ax_steps):
        ax.grid(alpha=0.3)
    ax_val.legend(fontsize=8, ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (scores in percent where they are accuracies)."""
    def pct(v, metric):
        if v is None:
            return "–"
        return f"{v:.2f}" if metric in LOWER_IS_BETTER else f"{100 * v:.1f}%"

    has_test = any("test" in r for r in rows)
    head = ["model", "steps", "minutes", "best valid", "at step", "final valid"]
    if has_test:
        head += ["test (best ckpt)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["model"]), str(r["steps"]), f"{r['minutes']:.1f}" if r["minutes"] is not None else "–",
                 pct(r["best_valid"], r["metric"]), str(r["best_step"]), pct(r["final_valid"], r["metric"])]
        if has_test:
            t = r.get("test", {})
            cells.append(_test_cell(t))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _test_cell(t: dict) -> str:
    if "error" in t:
        return "error"
    if "print_acc" in t:
        return f"{100 * t['print_acc']:.1f}% print / {100 * t['seq_acc']:.1f}% seq"
    if "acc" in t:
        return f"{100 * t['acc']:.1f}%"
    return "–"
