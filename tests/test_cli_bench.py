"""End-to-end: the real ``fastweights bench ops`` command on tiny shapes (a subprocess); ``bench plot`` and the
flag errors call the command line in this process (``cli_in_process``: no torch start-up)."""

import json

import pytest

from .helpers import cli_in_process, cli_subprocess


def test_bench_ops_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    r = cli_subprocess("bench", "ops", "--ops", "linear_attention,delta_rule", "--shapes", "1x2x8x4;1x1x5x2",
                       "--repeats", "2", "--json", out, "--markdown", tmp_path / "t.md", "--plot", tmp_path / "t.png",
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "delta_rule" in r.stdout and "sdpa" in r.stdout
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert data["environment"]["threads"] == 2
    # softmax attention (reference + sdpa) and the three timed impls of each requested op, at both shapes
    assert {(r["op"], r["impl"]) for r in rows} == {
        ("softmax_attention", "reference"), ("softmax_attention", "sdpa"), ("linear_attention", "reference"),
        ("linear_attention", "chunk"), ("linear_attention", "fused"), ("delta_rule", "reference"),
        ("delta_rule", "chunk"), ("delta_rule", "fused")}
    assert len(rows) == 16
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = cli_in_process(capsys, "bench", "plot", out, "--out", tmp_path / "again.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "again.png").stat().st_size > 1000
    table = (tmp_path / "t.md").read_text().splitlines()
    assert len(table) == 2 + 16 and table[0].startswith("| op | impl |")
    for row in rows:
        assert row["ms"] > 0 and row["tokens_per_s"] > 0 and row["peak_mb"] > 0
        assert row["speedup_vs_reference"] > 0 and row["ratio_to_sdpa"] > 0
        if row["impl"] == "reference":
            assert row["speedup_vs_reference"] == pytest.approx(1.0)


@pytest.mark.parametrize("args,needle", [
    (["--shapes", "8x8x512"], "--shapes"),
    (["--ops", "nope"], "--ops"),
    (["--repeats", "0"], "--repeats"),
])
def test_bench_ops_bad_flags_give_one_line_errors(args, needle, capsys):
    r = cli_in_process(capsys, "bench", "ops", *args)  # a traceback would be an exception here, failing the test
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert needle in last and "Traceback" not in r.stderr


def test_bench_plot_of_a_missing_file_is_a_one_line_error(tmp_path, capsys):
    r = cli_in_process(capsys, "bench", "plot", tmp_path / "none.json", "--out", tmp_path / "x.png")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot read benchmark rows" in r.stderr.strip().splitlines()[-1]
