"""``--stop-plateau FRACTION`` (issue 18): a supervised run stops at the first validation at which its best
validation is at least FRACTION of the steps old, and the rule holds across ``--resume``."""

from __future__ import annotations

import json

import pytest

from fastweights.train.config import TrainConfig
from fastweights.train.options import ConfigError

from .helpers import cli_in_process, read_records

TINY = ["listops", "--model", "lstm", "--depth", "2", "--sizes", "48,16,16", "--d-model", "16", "--layers", "1",
        "--heads", "2", "--batch-size", "8", "--eval-interval", "2", "--log-interval", "2", "--threads", "1",
        "--lr", "0.05"]


def test_the_rule():
    cfg = TrainConfig(task="listops", stop_plateau=0.25)
    assert cfg.plateau_reason(400, 301) is None  # a gain inside the last 25% (steps 301..400)
    assert "best at step 300" in cfg.plateau_reason(400, 300)  # none there
    assert cfg.plateau_reason(400, None) is None
    assert TrainConfig(task="listops").plateau_reason(10_000, 1) is None  # off by default
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ConfigError) as e:
            TrainConfig(task="listops", stop_plateau=bad)
        assert e.value.field == "stop_plateau"


def expected_stop(records: list[dict], fraction: float, active_from: int) -> int | None:
    """Replays the valid records: the step at which the rule fires (validations after ``active_from``)."""
    best = None
    for r in records:
        score = (r["acc"], -r["loss"])
        if best is None or score > best[0]:
            best = (score, r["step"])
        if r["step"] > active_from and r["step"] - best[1] >= fraction * r["step"]:
            return r["step"]
    return None


def check_run(run, fraction: float, total: int, active_from: int = 0) -> int:
    valid = read_records(run, "valid")
    summary = json.loads((run / "summary.json").read_text())
    stop = expected_stop(valid, fraction, active_from)
    assert summary["status"] == "completed"
    if stop is None or stop == total:
        assert summary["step"] == total
    else:
        assert summary["step"] == stop == valid[-1]["step"], (summary, valid)
        assert summary["stopped"].startswith("no validation gain over the last")
    return summary["step"]


def test_a_run_stops_on_a_plateau_and_the_rule_survives_resume(tmp_path, capsys):
    straight = tmp_path / "straight"
    cli_in_process(capsys, "train", *TINY, "--steps", "80", "--stop-plateau", "0.3", "--out", straight, check=0)
    step = check_run(straight, 0.3, 80)
    assert step < 80, "this recipe is meant to plateau: the test must see a stop"

    resumed = tmp_path / "resumed"
    cli_in_process(capsys, "train", *TINY, "--steps", "6", "--out", resumed, check=0)
    cli_in_process(capsys, "train", "listops", "--resume", "--out", resumed, "--steps", "80", "--stop-plateau",
                   "0.3", check=0)
    check_run(resumed, 0.3, 80, active_from=6)
    assert json.loads((resumed / "config.json").read_text())["stop_plateau"] == 0.3


def test_bad_fraction_is_a_one_line_error(tmp_path, capsys):
    r = cli_in_process(capsys, "train", *TINY, "--stop-plateau", "1.5", "--out", tmp_path / "x", check=2)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--stop-plateau" in lines[0]
    assert not (tmp_path / "x").exists()
