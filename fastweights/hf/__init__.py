"""Hugging Face ``transformers`` integration (the optional extra ``fastweights[hf]``).

* :class:`FastWeightsConfig` and :class:`FastWeightsForCausalLM` (``PreTrainedModel`` + ``GenerationMixin``): every
  fastweights language model as a transformers causal LM, its layer state the generation cache
  (:class:`FastWeightsCache`).
* :func:`export_run`: a trained language-model run -> a ``from_pretrained`` directory (safetensors weights,
  config, word-level tokenizer); ``fastweights export RUN_DIR --hf OUT`` on the command line.
* Registration: ``AutoConfig`` / ``AutoModelForCausalLM`` know the model type ``"fastweights"`` as soon as both
  ``fastweights`` and transformers' Auto classes are imported, in either order (``import fastweights`` itself
  stays cheap: it only watches for the Auto classes, see :mod:`fastweights.hf._hook`). :func:`register` does it
  explicitly; importing anything from this package does it too.

The names are loaded on first use, so ``import fastweights.hf`` costs nothing until then.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "FastWeightsConfig": ".configuration",
    "FastWeightsForCausalLM": ".modeling",
    "FastWeightsCache": ".modeling",
    "FastWeightsCausalLMOutput": ".modeling",
    "export_run": ".export",
    "build_tokenizer": ".export",
    "ExportError": ".export",
}

__all__ = ["register", *_NAMES]


def register() -> None:
    """Registers ``FastWeightsConfig`` with ``AutoConfig`` and ``FastWeightsForCausalLM`` with
    ``AutoModelForCausalLM`` (model type ``"fastweights"``); a second call does nothing."""
    from ._hook import register as _register

    _register()


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(_NAMES[name], __name__)
    except ImportError as e:
        if getattr(e, "name", None) in ("transformers", "tokenizers", "safetensors"):
            raise ImportError(f"fastweights.hf needs transformers and tokenizers: pip install 'fastweights[hf]' "
                              f"({e})") from e
        raise
    register()
    return getattr(module, name)
