"""End-to-end: the real ``fastweights models`` and ``fastweights bench step`` commands."""

import json
import subprocess
import sys

import pytest

from fastweights.layers import layer_names

CLI = [sys.executable, "-m", "fastweights.cli"]


def run(*args, timeout=300):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout)


def test_models_lists_every_layer_with_counts():
    r = run("models", "--d-model", "32", "--layers", "2", "--heads", "4", "--vocab", "500",
            "--adaptive-softmax", "100,300")
    assert r.returncode == 0, r.stderr
    for name in layer_names():
        assert f" {name} " in r.stdout, name
    assert "parameters" in r.stdout


def test_models_json_matches_library():
    from fastweights.models.summary import parameter_counts

    r = run("models", "--d-model", "16", "--layers", "1", "--heads", "2", "--vocab", "50", "--head", "sequence",
            "--num-classes", "3", "--json")
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
def test_bad_flag_values_give_one_line_errors(args, needle):
    r = run(*args, timeout=120)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert needle in last and "Traceback" not in r.stderr


def test_bench_step_runs(tmp_path):
    out = tmp_path / "step.json"
    r = run("bench", "step", "--tokens", "300", "--layer", "deltanet,transformer", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "deltanet" in r.stdout and "transformer" in r.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [row["layer"] for row in rows] == ["deltanet", "transformer"]
    for row in rows:
        assert row["tokens"] == 300 and row["latency_ratio"] > 0 and row["rss_growth_mb"] >= 0
