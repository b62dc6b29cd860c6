"""Parameter counts of every layer at one model size (``fastweights models``)."""

from __future__ import annotations

import torch

from ..layers import layer_names
from .config import ModelConfig
from .model import build_model, count_parameters


def parameter_counts(names: list[str] | None = None, **fields) -> list[dict]:
    """One row per layer name: the model built from ``ModelConfig(layer=name, **fields)`` and its counts.

    * ``total``: every parameter once (tied weights once).
    * ``word``: the vocabulary's weights (embedding / output words; adaptive-softmax head and tails).
    * ``non_word``: total - word (blocks, final LN, head projections that are not word rows).
    * ``mixer_per_layer``: parameters of one token mixer.
    """
    rows = []
    for name in names or layer_names():
        cfg = ModelConfig(layer=name, **fields)
        with torch.random.fork_rng():
            model = build_model(cfg)
        total = count_parameters(model)
        V, d = cfg.vocab_size, cfg.d_model
        tables = 1 if "weight" in dict(model.embed.named_parameters()) else 0  # own input embedding
        if model.asm is not None:
            tables += 1  # the adaptive softmax's word rows (the input embedding too when tied)
        elif model.lm_head is not None and model.lm_head.weight is not model.embed.weight:
            tables += 1
        word = tables * V * d
        rows.append({"layer": name, "total": total, "word": word, "non_word": total - word,
                     "mixer_per_layer": count_parameters(model.blocks[0].mixer)})
    return rows


def render_table(rows: list[dict], title: str):
    from rich.table import Table

    table = Table(title=title)
    for col in ("layer", "parameters", "non-word", "word", "mixer / layer"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for r in rows:
        table.add_row(r["layer"], f"{r['total']:,}", f"{r['non_word']:,}", f"{r['word']:,}",
                      f"{r['mixer_per_layer']:,}")
    return table


def layer_options() -> list[dict]:
    """One row per layer name: the options ``--layer-opt NAME=VALUE`` (``ModelConfig.layer_options``) can set,
    with their defaults, read from the layer's constructor."""
    import inspect

    from ..layers.base import _REGISTRY

    rows = []
    for name in layer_names():
        params = inspect.signature(_REGISTRY[name].__init__).parameters
        opts = {p: (None if v.default is inspect.Parameter.empty else v.default) for p, v in params.items()
                if p not in ("self", "d_model", "num_heads", "head_dim")}
        rows.append({"layer": name, "options": opts})
    return rows
