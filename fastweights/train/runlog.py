"""What a run writes and shows: metrics as JSONL and TensorBoard events, the learning-curve PNG, and a
progress bar on a terminal (plain log lines otherwise).

``metrics.jsonl``: one JSON object per line, ``{"step", "split": "train" | "valid", "loss", ...}`` with
``print_acc``/``seq_acc`` (code execution), ``acc`` (ListOps) or ``ppl`` (language model); train records
also have ``lr``, ``epoch``, ``tokens_per_s``; every record has ``train_seconds``, the run's time so far on its budget
clock. On resume, records after the checkpoint's step are dropped (they are written again by the resumed
run), and TensorBoard events after it are purged.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

METRICS = "metrics.jsonl"
TB_DIR = "tensorboard"
PLOT = "curves.png"


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:  # damaged bytes end the records like a cut line
        for line in f:
            try:
                records.append(json.loads(line))
            except ValueError:
                break  # a line cut short by a crash: everything after it is unreliable
    return records


class RunLog:
    """Rank 0's writer of metrics, TensorBoard events, plots and progress for one run directory."""

    def __init__(self, run_dir: Path, task: str, total_steps: int, start_step: int, progress: bool | None = None,
                 tensorboard: bool = True, formatter=None, plotter=None):
        """``formatter(record) -> str`` and ``plotter(history, png_path, title)`` replace the algorithmic
        tasks' line format and curves (the RL loop passes its own)."""
        self.run_dir, self.task, self.total = Path(run_dir), task, total_steps
        self._format = formatter or (lambda info: _fmt_info(task, info))
        self._plotter = plotter
        self.history = [r for r in read_metrics(run_dir) if r.get("step", 0) <= start_step]
        tmp = self.run_dir / f".{METRICS}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.history)
        os.replace(tmp, self.run_dir / METRICS)
        self._file = open(self.run_dir / METRICS, "a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / TB_DIR), purge_step=start_step + 1 if start_step else None)
        self.interactive = sys.stderr.isatty() if progress is None else progress
        self._bar = None
        if self.interactive:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True))
            self._task_id = self._bar.add_task("train", total=total_steps, completed=start_step, info="")
            self._bar.start()
        self._t0 = time.time()

    # ---- output ------------------------------------------------------------------------------------
    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def step(self, step: int, info: dict) -> None:
        """Per-step progress (the bar only; plain mode prints at each record)."""
        if self._bar is not None:
            self._bar.update(self._task_id, completed=step, info=self._format(info))

    def record(self, rec: dict) -> None:
        rec = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}
        self.history.append(rec)
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()
        if self.tb is not None:
            for k, v in rec.items():
                if k not in ("step", "split", "epoch") and isinstance(v, (int, float)) and v is not None:
                    self.tb.add_scalar(f"{rec['split']}/{k}", v, rec["step"])
            self.tb.flush()
        if rec["split"] == "train":
            if self._bar is None:
                self.message(f"step {rec['step']}/{self.total} | {self._format(rec)}")
        else:
            self.message(f"{rec['split']} at step {rec['step']}: {self._format(rec)}")

    def plot(self) -> None:
        """Redraws ``curves.png`` (loss and accuracy against step, train and valid), atomically."""
        import matplotlib

        if self._plotter is not None:
            tmp = self.run_dir / f".{PLOT}.tmp.png"
            self._plotter(self.history, tmp, self.run_dir.name)
            os.replace(tmp, self.run_dir / PLOT)
            return
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        acc_keys, ylabel, ylim = _second_panel(self.task)
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
        for split, style in (("train", "-"), ("valid", "o-")):
            recs = [r for r in self.history if r["split"] == split]
            if not recs:
                continue
            steps = [r["step"] for r in recs]
            ax_loss.plot(steps, [r.get("loss") for r in recs], style, label=split, markersize=3)
            for key in acc_keys:
                if all(key in r for r in recs):
                    ax_acc.plot(steps, [r[key] for r in recs], style, label=f"{split} {key}", markersize=3)
        ax_loss.set_xlabel("step")
        ax_loss.set_ylabel("loss (nats)")
        ax_loss.set_yscale("log")
        ax_acc.set_xlabel("step")
        ax_acc.set_ylabel(ylabel)
        if ylim == "log":
            ax_acc.set_yscale("log")
        else:
            ax_acc.set_ylim(*ylim)
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(self.run_dir.name)
        fig.tight_layout()
        tmp = self.run_dir / f".{PLOT}.tmp.png"
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        os.replace(tmp, self.run_dir / PLOT)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        self._file.close()


def _second_panel(task: str):
    """(metric keys, y label, y limits or "log") of the plot's second panel and the progress line."""
    if task == "code-exec":
        return ("print_acc", "seq_acc"), "accuracy", (0, 1)
    if task == "lm":
        return ("ppl",), "perplexity", "log"
    return ("acc",), "accuracy", (0, 1)


def _fmt_info(task: str, info: dict) -> str:
    parts = []
    if info.get("loss") is not None:
        parts.append(f"loss {info['loss']:.4f}")
    keys, _, ylim = _second_panel(task)
    for k in keys:
        if info.get(k) is not None:
            parts.append(f"{k} {info[k]:.2f}" if ylim == "log" else f"{k} {100 * info[k]:.1f}%")
    if info.get("tokens_per_s"):
        parts.append(f"{info['tokens_per_s']:,.0f} tok/s")
    return " | ".join(parts)
