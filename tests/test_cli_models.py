"""End-to-end: the real ``fastweights models`` and ``fastweights bench step`` commands. One run is a real
subprocess; the rest call the command line in this process (``cli_in_process``: no torch start-up)."""

import json

import pytest

from fastweights.layers import layer_names

from .helpers import cli_in_process, cli_subprocess


def test_models_lists_every_layer_with_counts():
    r = cli_subprocess("models", "--d-model", "32", "--layers", "2", "--heads", "4", "--vocab", "500",
                       "--adaptive-softmax", "100,300", timeout=300)
    assert r.returncode == 0, r.stderr
    for name in layer_names():
        assert f" {name} " in r.stdout, name
    assert "parameters" in r.stdout


def test_models_json_matches_library(capsys):
    from fastweights.models.summary import parameter_counts

    r = cli_in_process(capsys, "models", "--d-model", "16", "--layers", "1", "--heads", "2", "--vocab", "50",
                       "--head", "sequence", "--num-classes", "3", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert [row["layer"] for row in rows] == layer_names()
    lib = parameter_counts(vocab_size=50, d_model=16, num_layers=1, num_heads=2, head="sequence", num_classes=3)
    assert [row["total"] for row in rows] == [row["total"] for row in lib]


@pytest.mark.parametrize("args,needle", [
    (["models", "--d-model", "0"], "--d-model"),
    (["models", "--adaptive-softmax", "20,abc"], "--adaptive-softmax"),
    (["models", "--vocab", "100", "--adaptive-softmax", "200,300"], "--adaptive-softmax"),
    (["models", "--d-model", "30", "--heads", "4"], "--heads"),
    (["models", "--head", "lm", "--num-classes", "4"], "--num-classes"),
    (["bench", "step", "--layer", "nope"], "--layer"),
    (["bench", "step", "--tokens", "10"], "--tokens"),
])
def test_bad_flag_values_give_one_line_errors(args, needle, capsys):
    r = cli_in_process(capsys, *args)  # a traceback would be an exception here, failing the test
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert needle in last and "Traceback" not in r.stderr


def test_bench_step_runs(tmp_path, capsys):
    out = tmp_path / "step.json"
    r = cli_in_process(capsys, "bench", "step", "--tokens", "100", "--d-model", "32", "--layer",
                       "deltanet,transformer", "--json", out)
    assert r.returncode == 0, r.stderr
    assert "deltanet" in r.stdout and "transformer" in r.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [row["layer"] for row in rows] == ["deltanet", "transformer"]
    for row in rows:
        assert row["tokens"] == 100 and row["latency_ratio"] > 0 and row["rss_growth_mb"] >= 0
