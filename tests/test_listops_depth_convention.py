"""ListOps depth conventions (issue 18): ``nesting`` (the maximum bracket nesting, the default) and
``reference`` (the leaves counted as a level, as the reference generators' ``--only_depth``: nesting + 1),
from the generator through ``fastweights data`` / ``fastweights train`` to the saved config and data meta."""

from __future__ import annotations

import json

import pytest

from fastweights.tasks import listops, load_splits, make_splits
from fastweights.train.config import TrainConfig
from fastweights.train.options import ConfigError

from .helpers import cli_in_process

TINY = ["--model", "lstm", "--d-model", "16", "--layers", "1", "--heads", "2", "--batch-size", "16",
        "--eval-interval", "2", "--log-interval", "1", "--threads", "1"]


def levels_of_leaves(tokens) -> int:
    """The reference generators' depth by recursion on the tree (root at level 1, a leaf one level below its
    operator, an operator the deepest level under it), independent of ``reference_depth_of``."""
    pos = 0

    def node(level: int) -> int:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if not tok.startswith("["):
            return level
        deepest = 0
        while tokens[pos] != listops.CLOSE:
            deepest = max(deepest, node(level + 1))
        pos += 1
        return deepest

    return node(1)


@pytest.mark.parametrize("depth", [2, 3, 6, 11, 16])
def test_reference_depth_is_nesting_plus_one_on_generated_examples(depth):
    ref = listops.generate(60, depth, seed=depth, depth_convention="reference")
    assert ref == listops.generate(60, depth - 1, seed=depth)  # the same stream: reference D == nesting D-1
    for tokens, label in ref:
        assert listops.depth_of(tokens) == depth - 1  # measured: the maximum bracket nesting
        assert listops.reference_depth_of(tokens) == depth == levels_of_leaves(tokens)
        assert listops.evaluate(tokens) == label
    nest = listops.generate(60, depth, seed=depth)
    assert {listops.depth_of(t) for t, _ in nest} == {depth}
    assert {listops.reference_depth_of(t) for t, _ in nest} == {depth + 1}


def test_nesting_depth_maps_and_rejects_in_one_line():
    assert listops.nesting_depth(15) == 15 and listops.nesting_depth(16, "reference") == 15
    for depth, convention, needle in [(1, "reference", "depth"), (0, "nesting", "depth"), (3, "leaves", "convention"),
                                      (True, "nesting", "depth"), ("4", "nesting", "depth")]:
        with pytest.raises(ValueError, match=needle) as e:
            listops.nesting_depth(depth, convention)
        assert "\n" not in str(e.value)


def test_make_splits_records_the_convention_and_the_nesting_in_meta():
    ref = make_splits("listops", sizes=(20, 5, 5), seed=1, depth=5, depth_convention="reference")
    nest = make_splits("listops", sizes=(20, 5, 5), seed=1, depth=4)
    assert ref.train == nest.train and ref.test == nest.test
    assert ref.meta["options"] == nest.meta["options"] == {"depth": 4, "ops": ["MIN", "MAX", "FIRST"]}
    assert ref.meta["listops_depth"] == {"depth": 5, "depth_convention": "reference", "nesting_depth": 4}
    assert nest.meta["listops_depth"] == {"depth": 4, "depth_convention": "nesting", "nesting_depth": 4}


def test_config_resolves_records_and_reads_back():
    cfg = TrainConfig(task="listops", depth=15, depth_convention="reference", sizes=[64, 8, 8])
    assert cfg.nesting_depth == 14
    assert cfg.task_options() == {"depth": 15, "depth_convention": "reference", "ops": ["MIN", "MAX", "FIRST"]}
    data = cfg.to_dict()
    assert (data["depth"], data["depth_convention"], data["nesting_depth"]) == (15, "reference", 14)
    back = TrainConfig.from_dict(json.loads(json.dumps(data)))
    assert back == cfg and back.default_out().endswith("d15-ref-delta-rnn-s0")
    with pytest.raises(ValueError, match="nesting_depth 15 does not match"):
        TrainConfig.from_dict({**data, "nesting_depth": 15})
    with pytest.raises(ConfigError, match="depth_convention") as e:
        TrainConfig(task="listops", depth_convention="leaves")
    assert e.value.field == "depth_convention"
    with pytest.raises(ConfigError, match=">= 2") as e:
        TrainConfig(task="listops", depth=1, depth_convention="reference")
    assert e.value.field == "depth"


def test_an_old_config_without_the_field_loads_as_nesting(tmp_path):
    data = TrainConfig(task="listops", depth=9, sizes=[64, 8, 8]).to_dict()
    for key in ("depth_convention", "nesting_depth", "bucket_batches"):
        data.pop(key)
    old = TrainConfig.from_dict(data)
    assert (old.depth, old.depth_convention, old.nesting_depth, old.bucket_batches) == (9, "nesting", 9, 0)
    from fastweights.train.runs import load_config

    (tmp_path / "config.json").write_text(json.dumps(data))
    assert load_config(tmp_path).depth_convention == "nesting"


def test_cli_data_and_train_end_to_end(tmp_path, capsys):
    d = tmp_path / "d"
    cli_in_process(capsys, "data", "listops", "--depth", "4", "--depth-convention", "reference", "--sizes", "48,16,16",
                   "--out", d, check=0)
    splits = load_splits(d)
    assert {listops.depth_of(t) for t, _ in splits.train + splits.valid + splits.test} == {3}
    assert splits.meta["options"]["depth"] == 3
    assert splits.meta["listops_depth"] == {"depth": 4, "depth_convention": "reference", "nesting_depth": 3}
    # the very same data asked for in the other convention is accepted, and the directory keeps its record
    cli_in_process(capsys, "data", "listops", "--depth", "3", "--sizes", "48,16,16", "--out", d, check=0)
    assert load_splits(d).meta["listops_depth"]["depth_convention"] == "reference"

    run = tmp_path / "from-data"
    cli_in_process(capsys, "train", "listops", "--data", d, *TINY, "--steps", "2", "--out", run, check=0)
    saved = json.loads((run / "config.json").read_text())
    assert (saved["depth"], saved["depth_convention"], saved["nesting_depth"]) == (4, "reference", 3)

    run = tmp_path / "generated"
    cli_in_process(capsys, "train", "listops", "--depth", "3", "--depth-convention", "reference", "--sizes",
                   "48,16,16", *TINY, "--steps", "2", "--out", run, check=0)
    saved = json.loads((run / "config.json").read_text())
    assert (saved["depth"], saved["depth_convention"], saved["nesting_depth"]) == (3, "reference", 2)
    meta = json.loads((run / "data" / "meta.json").read_text())
    assert meta["options"]["depth"] == 2 and meta["listops_depth"]["depth_convention"] == "reference"
    assert {listops.depth_of(t) for t, _ in load_splits(run / "data").train} == {2}
    cli_in_process(capsys, "train", "listops", "--resume", "--out", run, "--steps", "3", check=0)
    assert json.loads((run / "summary.json").read_text())["step"] == 3


def test_a_data_directory_without_the_record_reads_as_nesting(tmp_path):
    from fastweights.train.loop import _config_from_data

    meta = make_splits("listops", sizes=(20, 5, 5), seed=0, depth=3).meta
    meta.pop("listops_depth")
    cfg = _config_from_data(TrainConfig(task="listops", data_dir=str(tmp_path), depth_convention="reference",
                                        depth=7), meta)
    assert (cfg.depth, cfg.depth_convention, cfg.nesting_depth) == (3, "nesting", 3)


@pytest.mark.parametrize("argv,flag", [
    ("data listops --depth-convention leaves --out {d}", "--depth-convention"),
    ("data listops --depth 1 --depth-convention reference --out {d}", "--depth"),
    ("train listops --depth-convention leaves --out {d}", "--depth-convention"),
    ("train listops --depth 1 --depth-convention reference --out {d}", "--depth"),
    ("train code-exec --depth-convention reference --out {d}", "--depth-convention"),
])
def test_bad_values_are_one_line_errors_naming_the_flag(argv, flag, tmp_path, capsys):
    r = cli_in_process(capsys, *argv.format(d=tmp_path / "x").split(), check=2)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and flag in lines[0], r.stderr
    assert not (tmp_path / "x").exists()


def test_depth_convention_with_data_is_refused(tmp_path, capsys):
    cli_in_process(capsys, "data", "listops", "--depth", "3", "--sizes", "20,5,5", "--out", tmp_path / "d", check=0)
    r = cli_in_process(capsys, "train", "listops", "--data", tmp_path / "d", "--depth-convention", "reference",
                       "--out", tmp_path / "r", check=2)
    assert "--depth-convention" in r.stderr and len(r.stderr.strip().splitlines()) == 1
