"""End-to-end: ``fastweights bench train`` (real training steps in worker processes), against itself as the
baseline so the ratio columns are exercised."""

import json
from pathlib import Path

from .helpers import cli_in_process, cli_subprocess

REPO = Path(__file__).resolve().parents[1]


def test_bench_train_rows_and_baseline_ratios(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTWEIGHTS_CACHE", str(tmp_path / "cache"))  # the matmul-speed cache stays in tmp
    out = tmp_path / "bench.json"
    r = cli_subprocess("bench", "train", "--models", "lstm", "--precision", "fp32,bf16", "--steps", "1",
                       "--warmup", "0", "--rounds", "1", "--batch-size", "8", "--threads", "1",
                       "--baseline", REPO, "--json", out, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    rows = {(row["code"], row["precision"]): row for row in data["rows"]}
    assert set(rows) == {("current", "fp32"), ("current", "bf16"), ("baseline", "fp32"), ("baseline", "bf16")}
    for row in rows.values():
        assert "error" not in row, row
        assert row["ms_per_step"] > 0 and row["tokens_per_s"] > 0 and row["gflops"] > 0 and row["matmul_gflops"] > 0
    assert rows[("current", "fp32")]["speedup_vs_baseline_fp32"] > 0
    assert "speedup_vs_baseline" not in rows[("current", "fp32")]  # the same-precision ratio is the fp32 one
    assert rows[("current", "bf16")]["speedup_vs_baseline"] > 0
    assert rows[("current", "bf16")]["speedup_vs_baseline_fp32"] > 0
    assert data["machine"]["cpu"]
    assert (tmp_path / "cache" / "matmul_speed.json").is_file()


def test_bench_train_baseline_without_a_package_is_one_line(tmp_path):
    r = cli_subprocess("bench", "train", "--baseline", tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--baseline" in r.stderr


def test_bench_train_formal_language_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTWEIGHTS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench.json"
    r = cli_subprocess("bench", "train", "--task", "formal", "--language", "dyck-1", "--models", "rdn,srwm",
                       "--steps", "1", "--warmup", "0", "--rounds", "1", "--threads", "1", "--json", out, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["rows"]
    assert sorted(row["model"] for row in rows) == ["rdn", "srwm"]
    for row in rows:
        assert "error" not in row, row
        assert row["task"] == "formal" and row["language"] == "dyck-1"
        assert row["batch_size"] == 32  # the formal task's default batch
        assert row["ms_per_step"] > 0 and row["tokens_per_s"] > 0


def test_bench_train_language_errors_are_one_line(capsys):
    for argv, flag in ((["--task", "listops", "--language", "dyck-1"], "--language"),
                       (["--task", "formal", "--language", "klingon"], "--language"),
                       (["--task", "formal", "--baseline", str(REPO)], "--baseline")):
        r = cli_in_process(capsys, "bench", "train", *argv)
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and flag in r.stderr, (argv, r.stderr)
