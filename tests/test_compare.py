"""``fastweights compare``: one row and one curve per run."""

import json

import pytest

from fastweights.cli import main
from fastweights.train import TrainConfig, train
from fastweights.train.compare import _minutes, load_run, summarize_run


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for model in ("lstm", "lt"):
        cfg = TrainConfig(task="listops", model=model, depth=2, sizes=[32, 16, 16], d_model=16, num_layers=1,
                          num_heads=2, steps=4, batch_size=8, eval_interval=2, out=str(root / f"d2-{model}"),
                          threads=1, budget_clock="cpu", time_budget_minutes=10)
        train(cfg, progress=False)
        dirs.append(root / f"d2-{model}")
    return dirs


def test_compare_cli_writes_table_plot_and_test_scores(two_runs, tmp_path, capsys):
    png, md = tmp_path / "c.png", tmp_path / "c.md"
    assert main(["compare", *map(str, two_runs), "--test", "--plot", str(png), "--markdown", str(md), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["lstm", "lt"]
    for r, d in zip(rows, two_runs):
        valid = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()
                 if json.loads(line)["split"] == "valid"]
        assert [v["step"] for v in valid] == [2, 4]
        assert r["best_valid"] == max(v["acc"] for v in valid) and r["final_valid"] == valid[-1]["acc"]
        assert r["steps"] == 4 and r["clock"] == "cpu" and r["metric"] == "acc"
        assert r["test"]["split"] == "test" and r["test"]["examples"] == 16 and 0 <= r["test"]["acc"] <= 1
    text = md.read_text()
    assert text.startswith("| model | steps |") and text.count("\n") == 4 and "test (best ckpt)" in text
    assert png.stat().st_size > 5000


def test_records_carry_the_budget_clock_and_old_runs_are_scaled(two_runs):
    run = load_run(two_runs[0])
    valid = [r for r in run["records"] if r["split"] == "valid"]
    xs, measured = _minutes(run, valid)
    assert measured and 0 < xs[0] <= xs[1] <= run["summary"]["train_seconds"] / 60 + 1e-9
    for r in valid:  # a run from before records had train_seconds: steps scaled to the total time
        del r["train_seconds"]
    xs, measured = _minutes(run, valid)
    assert not measured and xs[1] == pytest.approx(run["summary"]["train_seconds"] / 60)
    assert xs[0] == pytest.approx(xs[1] / 2)


def test_compare_rejects_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run directory" in err[0]


def test_lower_is_better_for_loss():
    run = {"name": "r", "dir": "r", "config": {"model": "lt", "task": "listops"}, "summary": {},
           "records": [{"step": 1, "split": "valid", "loss": 2.0}, {"step": 2, "split": "valid", "loss": 1.0},
                       {"step": 3, "split": "valid", "loss": 1.5}]}
    row = summarize_run(run, "loss")
    assert row["best_valid"] == 1.0 and row["best_step"] == 2 and row["final_valid"] == 1.5


def test_test_scores_are_kept_per_checkpoint_and_reused_by_compare(tmp_path, monkeypatch):
    """evaluate_run keeps each result in evals.json; compare --test reuses it for the same checkpoint and
    evaluates again when the best checkpoint is another one."""
    import dataclasses

    from fastweights.train import evaluate_run
    from fastweights.train import loop

    cfg = TrainConfig(task="listops", depth=2, sizes=[32, 16, 16], d_model=16, num_layers=1, num_heads=2, steps=2,
                      batch_size=8, eval_interval=2, out=str(tmp_path / "r"), threads=1)
    train(cfg, progress=False)
    first = evaluate_run(tmp_path / "r", "test", "best")
    kept = json.loads((tmp_path / "r" / "evals.json").read_text())
    assert list(kept) == ["test/step-00000002"] and kept["test/step-00000002"]["result"]["acc"] == first["acc"]
    calls = []
    real = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert evaluate_run(tmp_path / "r", "test", "best", cache=True) == first and calls == []
    assert evaluate_run(tmp_path / "r", "test", "best")["acc"] == first["acc"] and calls == [1]  # no cache: fresh
    # a resumed run's new checkpoint is another one: evaluated again, both results kept
    train(dataclasses.replace(cfg, steps=4), resume=True, progress=False)
    calls.clear()  # (training validated through it too)
    assert evaluate_run(tmp_path / "r", "test", "last", cache=True)["step"] == 4 and calls == [1]
    assert sorted(json.loads((tmp_path / "r" / "evals.json").read_text())) == ["test/step-00000002",
                                                                               "test/step-00000004"]
