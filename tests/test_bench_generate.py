"""End-to-end: ``fastweights bench generate`` on randomly initialised models (no run directory), against this tree
as the baseline so the ratio columns are exercised, and its one-line errors."""

import json
from pathlib import Path

from .helpers import cli_in_process, cli_subprocess

REPO = Path(__file__).resolve().parents[1]


def test_bench_generate_rows_and_baseline_ratios(tmp_path):
    out = tmp_path / "gen.json"
    r = cli_subprocess("bench", "generate", "--models", "deltanet,rdn", "--vocab", "500", "--contexts", "8,40",
                       "--tokens", "3", "--repeats", "1", "--precision", "fp32,bf16", "--baseline", REPO,
                       "--json", out, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "deltanet" in r.stdout and "tokens/s" in r.stdout
    data = json.loads(out.read_text())
    rows = {(row["code"], row["model"], row["precision"], row["context"]): row for row in data["rows"]}
    assert set(rows) == {(c, m, p, ctx) for c in ("current", "baseline") for m in ("deltanet", "rdn")
                         for p in ("fp32", "bf16") for ctx in (8, 40)}
    for row in rows.values():
        assert "error" not in row, row
        assert row["tokens_per_s"] > 0 and row["ms_per_token"] > 0 and row["cpu_ms_per_token"] > 0
        assert row["vocab"] == 500 and row["preset"] == "tiny" and row["calls"] == 1
        assert ("cost_vs_shortest" in row) == (row["context"] == 40)
        assert ("speedup_vs_baseline" in row) == (row["code"] == "current")
    assert rows[("current", "rdn", "bf16", 8)]["speedup_vs_baseline_fp32"] > 0
    assert data["machine"]["cpu"] and data["baseline"] == str(REPO)


def test_bench_generate_errors_are_one_line(tmp_path, capsys):
    for argv, flag in (([], "--models"),
                       (["--models", "deltanet", "--vocab", "1"], "--vocab"),
                       (["--models", "deltanet", "--baseline", str(tmp_path)], "--baseline"),
                       (["--models", "deltanet", "--contexts", "0"], "--contexts")):
        r = cli_in_process(capsys, "bench", "generate", *argv)
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and flag in r.stderr, (argv, r.stderr)
