"""Checkpoints of the committed runs keep loading: a model built today from the ``config.json`` of a run
under results/ has exactly the tensors (names and shapes) that the code which trained it wrote to
``model.safetensors``, so those files load strictly.

results/ keeps configs and metrics, not weights, so ``tests/data/checkpoint_tensors.json`` records, for
runs of each kind (supervised, language model, RL with a fast-weight and with an LSTM core), the tensor
names and shapes of ``model.safetensors`` as written by the code before the block stack became
:class:`fastweights.models.BlockStack` (commit f5cf0a7)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_file, save_model

from fastweights.models import build_model

RECORD = json.loads((Path(__file__).parent / "data" / "checkpoint_tensors.json").read_text())
RESULTS = Path(__file__).resolve().parents[1] / "results"


def _build(run: str, entry: dict):
    data = json.loads((RESULTS / run / "config.json").read_text())
    if entry["kind"] == "rl":
        from fastweights.rl.actors import build_agent
        from fastweights.rl.config import RLConfig

        return build_agent(RLConfig.from_dict(data), tuple(entry["obs_shape"]), entry["num_actions"])
    if entry["kind"] == "lm":
        from fastweights.train.lm_config import LMConfig as config_class
    else:
        from fastweights.train.config import TrainConfig as config_class
    return build_model(config_class.from_dict(data).model_config())


def _tensors(path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}


def test_the_record_covers_every_kind():
    assert {e["kind"] for e in RECORD.values()} == {"supervised", "lm", "rl"}
    assert any(k.startswith("core.blocks.") for e in RECORD.values() for k in e["tensors"])  # an FWP core


@pytest.mark.parametrize("run", list(RECORD))
def test_committed_run_checkpoint_loads(run, tmp_path):
    entry = RECORD[run]
    torch.manual_seed(0)
    model = _build(run, entry)
    path = tmp_path / "model.safetensors"
    save_model(model, str(path))
    assert _tensors(path) == entry["tensors"]
    # a file as the old code wrote it (these names and shapes, other values) loads strictly, every value
    gen = torch.Generator().manual_seed(1)
    old = {k: torch.randn(shape, generator=gen) for k, shape in entry["tensors"].items()}
    save_file(old, str(path))
    missing, unexpected = load_model(model, str(path), strict=True)
    assert not missing and not unexpected
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in old.items())
