"""How a training run is shown and summed up, apart from how it trains: the hooks of
:class:`~.driver.StepLoop` that only present (the run log's format, the rates, the start and end messages,
the summary's own entries). Every hook has a default; a task overrides the ones it shows differently."""

from __future__ import annotations


class Report:
    """The presentation hooks of a task (mixed into :class:`~.driver.Task`). ``name`` and ``total`` are the
    task's."""

    name: str = ""
    total: int = 0

    def run_log_options(self) -> dict:
        """Keyword arguments of :class:`.runlog.RunLog` (``formatter``, ``plotter``) replacing the defaults."""
        return {}

    def rates(self, sums: dict, seconds: float) -> dict:
        """Per-second metrics of train sums gathered over ``seconds`` (train records, progress bar)."""
        return {"tokens_per_s": sums["tokens"] / max(seconds, 1e-9)}

    def progress_metrics(self, accum: dict) -> dict:
        """What the progress bar shows, from this process's train sums (default: the task's train metrics)."""
        return self.train_metrics(accum)

    def describe(self) -> str:
        """The start message after ``starting: `` / ``resuming at step N: ``."""
        return f"{self.name}, {self.total} steps"

    def describe_best(self, best: dict) -> str:
        """The best validation in the final message (``done: N steps; best valid ... at step S``)."""
        metrics = best.get("metrics", {})
        return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))

    def describe_end(self, summary: dict, best: dict | None) -> str:
        """What the final message of a completed run says after ``done: N steps``."""
        return f"; best valid {self.describe_best(best)} at step {best['step']}" if best else ""

    def best_valid(self, best: dict):
        """The summary's ``best_valid`` entry."""
        return best

    def summary(self, summary: dict, train_seconds: float) -> dict:
        """The summary with the task's own entries."""
        return summary
