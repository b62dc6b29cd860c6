"""The declared run configs (train/options.py), the CLI generated from them, recipes (--config), layer options
(--layer-opt), the run-kind registry (train/runs.py): config.json format, moving a run, migrate, provenance."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import fields
from pathlib import Path

import pytest

from fastweights.cli import build_parser, main
from fastweights.rl.config import RLConfig
from fastweights.train.config import TrainConfig
from fastweights.train.lm_config import LMConfig
from fastweights.train.options import ConfigError, flag_of, opt_of, parse_number
from fastweights.train.runs import KINDS, config_record, load_config, resume_config

REPO = Path(__file__).resolve().parents[1]
TINY = ["--vars", "3", "--length", "8", "--sizes", "64,16,16", "--steps", "2", "--batch-size", "8", "--d-model", "16",
        "--heads", "2", "--layers", "1", "--eval-interval", "2", "--log-interval", "1", "--eval-batch-size", "16"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ------------------------------------------------------------------------------------------ numbers

@pytest.mark.parametrize("text,value", [("100", 100), ("1e5", 100000), ("2_000", 2000), ("3.0", 3), (" 7 ", 7),
                                        ("123456789012345678", 123456789012345678)])
def test_integers_parse_the_same_way_everywhere(text, value):
    assert parse_number(text, True, "--x") == value


@pytest.mark.parametrize("text", ["2.5", "abc", "", "inf", "nan", "1e5x"])
def test_bad_integers_name_the_flag(text):
    with pytest.raises(ValueError, match="^--x: expected an integer"):
        parse_number(text, True, "--x")


@pytest.mark.parametrize("command,args", [("code-exec", ["--steps", "1e5"]), ("lm", ["--steps", "1e5"]),
                                          ("memory", ["--frames", "1e5"])])
def test_every_trainer_accepts_exponent_step_counts(command, args):
    parser = build_parser()
    ns = parser.parse_args(["train", command, *args])
    from fastweights.cli.args import given_fields

    cls = KINDS[ns.run_kind].config_class()
    assert given_fields(ns, cls, command)[args[0][2:]] == 100000


# ------------------------------------------------------------------------------------------ generated flags

@pytest.mark.parametrize("kind,command", [(k, c) for k in KINDS for c in KINDS[k].commands])
def test_every_declared_field_is_a_flag_with_help(kind, command):
    """The train sub-commands' flags are exactly the declared fields that the command has."""
    cls = KINDS[kind].config_class()
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["train"]._subparsers._group_actions[0].choices[command]
    flags = {s for a in sub._actions for s in a.option_strings} - {"-h", "--help", "--config", "--resume"}
    want = set()
    for f in fields(cls):
        opt = opt_of(f)
        if opt is not None and opt.cli and (not opt.commands or command in opt.commands):
            assert opt.help, f.name
            want.add(flag_of(f))
    assert flags == want


def test_shared_fields_are_declared_once():
    """A field all trainers share (weight_decay, added as one declaration) is one declaration in RunConfig."""
    for cls in (TrainConfig, LMConfig, RLConfig):
        f = next(f for f in fields(cls) if f.name == "weight_decay")
        assert opt_of(f) is opt_of(next(g for g in fields(TrainConfig) if g.name == "weight_decay"))
        with pytest.raises(ConfigError) as e:
            cls(**({"data_dir": "d"} if cls is LMConfig else {}), weight_decay=-1.0)
        assert e.value.field == "weight_decay"


def test_resumable_comes_from_the_declaration(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "code-exec", *TINY, "--model", "deltanet", "--out", str(run)]) == 0
    capsys.readouterr()
    cfg = resume_config(run, {"steps": 4, "eval_interval": 3})
    assert (cfg.steps, cfg.eval_interval) == (4, 3)
    assert main(["train", "code-exec", "--resume", "--out", str(run), "--lr", "1e-3"]) == 2
    assert _one_error_line(capsys).startswith("fastweights: error: --lr: cannot change lr on resume")
    assert main(["train", "code-exec", "--resume", "--out", str(run), "--steps", "1"]) == 2
    assert "already at step 2" in _one_error_line(capsys)
    assert main(["train", "lm", "--resume", "--out", str(run)]) == 2
    assert "is an algorithmic-task (supervised) run, not a language-model run" in _one_error_line(capsys)
    assert main(["train", "listops", "--resume", "--out", str(run)]) == 2
    assert "is a code-exec run, not listops" in _one_error_line(capsys)


# ------------------------------------------------------------------------------------------ recipes and layer options

def test_config_file_is_a_recipe_that_flags_override(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: deltanet\nd-model: 16\nnum_heads: 2\nnum_layers: 1\nlr: 1.0e-3\nsteps: 2\n"
                      "sizes: [64, 16, 16]\nnum_vars: 3\nlength: 8\nbatch_size: 8\neval_interval: 2\n"
                      "layer_options: {feature_map: dpfp, nu: 1}\n")
    run = tmp_path / "run"
    assert main(["train", "code-exec", "--config", str(recipe), "--lr", "2e-3", "--out", str(run)]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["lr"] == 2e-3 and saved["d_model"] == 16 and saved["model"] == "deltanet"
    assert saved["layer_options"] == {"feature_map": "dpfp", "nu": 1}
    bad = tmp_path / "bad.yaml"
    bad.write_text("d_modle: 16\n")
    capsys.readouterr()
    assert main(["train", "code-exec", "--config", str(bad), "--out", str(tmp_path / "r2")]) == 2
    assert "unknown field(s) d_modle" in _one_error_line(capsys)
    bad.write_text("[1, 2]\n")
    assert main(["train", "code-exec", "--config", str(bad), "--out", str(tmp_path / "r2")]) == 2
    assert "must hold a mapping" in _one_error_line(capsys)
    assert not (tmp_path / "r2").exists()


def test_layer_options_reach_the_model_and_bad_ones_are_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "code-exec", *TINY, "--model", "deltanet", "--layer-opt", "feature_map=dpfp",
                 "--layer-opt", "nu=2", "--out", str(run)]) == 0
    cfg = load_config(run)
    assert cfg.layer_options == {"feature_map": "dpfp", "nu": 2}
    from fastweights.models import build_model

    from fastweights.layers.fwp import DeltaNet

    mixer = next(m for m in build_model(cfg.model_config()).modules() if isinstance(m, DeltaNet))
    assert mixer.feature_dim == 2 * 2 * 8  # DPFP with nu=2 on heads of 16 / 2

    capsys.readouterr()
    for opt, needle in (("feature_map=dpfq", "feature_map must be one of"), ("nu", "expected NAME=VALUE"),
                        ("window=3", "has no option 'window'")):
        assert main(["train", "code-exec", *TINY, "--model", "deltanet", "--layer-opt", opt,
                     "--out", str(tmp_path / "bad")]) == 2
        line = _one_error_line(capsys)
        assert line.startswith("fastweights: error: --layer-opt:") and needle in line, line
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------------ run records

def test_config_json_records_kind_and_relative_paths_and_runs_move(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    assert main(["data", "code-exec", "--vars", "3", "--length", "8", "--sizes", "64,16,16", "--out", str(data)]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["train", "code-exec", *TINY[6:], "--data", "data", "--model",
                 "deltanet", "--out", "runs/a"]) == 0
    saved = json.loads((tmp_path / "runs/a/config.json").read_text())
    assert saved["kind"] == "supervised" and saved["format"] == 2
    assert saved["out"] == "." and saved["data_dir"] == os.path.join("..", "..", "data")
    prov = json.loads((tmp_path / "runs/a/provenance.json").read_text())["sessions"]
    assert len(prov) == 1 and prov[0]["code"]["source"] and prov[0]["machine"]["cpu"]
    assert prov[0]["machine"]["threads"] >= 1 and prov[0]["machine"]["torch"]
    # moved, and resumed from another working directory
    shutil.move(str(tmp_path / "runs"), str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["train", "code-exec", "--resume", "--out", "a", "--steps", "4"]) == 0
    assert len(json.loads(Path("a/provenance.json").read_text())["sessions"]) == 2
    assert json.loads(Path("a/summary.json").read_text())["step"] == 4


def test_eval_cache_is_keyed_on_the_code(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "code-exec", *TINY, "--model", "deltanet", "--out", str(run)]) == 0
    assert main(["eval", str(run), "--json"]) == 0
    kept = json.loads((run / "evals.json").read_text())
    (key, entry), = kept.items()
    from fastweights.provenance import source_sha256
    from fastweights.train import evaluate_run

    assert entry["source"] == source_sha256()
    entry["result"]["loss"] = 123.0  # a result kept by this code is reused ...
    (run / "evals.json").write_text(json.dumps(kept))
    assert evaluate_run(run, cache=True)["loss"] == 123.0
    entry["source"] = "other code"  # ... one kept by other code is not
    (run / "evals.json").write_text(json.dumps(kept))
    assert evaluate_run(run, cache=True)["loss"] != 123.0


def test_migrate_rewrites_a_legacy_run_and_it_still_evaluates(tmp_path, capsys):
    runs = sorted((REPO / "results").glob("algorithmic/records/runs/*/config.json"))
    if not runs:
        pytest.skip("no committed supervised run records")
    src = runs[0].parent
    run = tmp_path / "legacy"
    shutil.copytree(src, run)
    data = json.loads((run / "config.json").read_text())
    data.pop("kind", None), data.pop("format", None)
    data["out"] = "/some/machine/path/runs/x"
    data["data_dir"] = "/some/machine/path/data/x"  # a legacy absolute path
    (run / "config.json").write_text(json.dumps(data))
    before = load_config(run)
    assert before.kind == "supervised" and before.out == str(run)
    assert main(["migrate", str(run)]) == 0
    after = json.loads((run / "config.json").read_text())
    assert after["kind"] == "supervised" and after["format"] == 2 and after["out"] == "."
    assert not os.path.isabs(after["data_dir"]) and after["data_dir"].endswith("some/machine/path/data/x")
    assert load_config(run) == before  # the same paths, now stored relative to the run
    capsys.readouterr()
    assert main(["migrate", str(run)]) == 0
    assert "already current" in capsys.readouterr().out


def test_config_record_round_trips_every_kind(tmp_path):
    for cfg in (TrainConfig(out=str(tmp_path / "a")), LMConfig(data_dir=str(tmp_path / "d"), out=str(tmp_path / "b")),
                RLConfig(env="memory", actors=0, out=str(tmp_path / "c"))):
        run = Path(cfg.out)
        run.mkdir()
        (run / "config.json").write_text(json.dumps(config_record(cfg, run)))
        assert load_config(run) == cfg
