"""Registers the fastweights classes with transformers' Auto classes once both are imported, in either order.

``import fastweights`` calls :func:`install`, which costs microseconds and imports nothing: if transformers' Auto
models (``transformers.models.auto.modeling_auto``) are already loaded it registers at once; otherwise it puts a
one-shot finder on ``sys.meta_path`` that waits for that module and registers right after it has loaded. Nothing
happens when transformers is not installed. This module must not import torch or transformers at import time.
"""

from __future__ import annotations

import importlib.machinery
import sys
import warnings

WATCHED = "transformers.models.auto.modeling_auto"
_registered = False


def register() -> None:
    """Registers ``FastWeightsConfig`` / ``FastWeightsForCausalLM`` under the model type ``"fastweights"``."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    from .configuration import MODEL_TYPE, FastWeightsConfig
    from .modeling import FastWeightsForCausalLM

    AutoConfig.register(MODEL_TYPE, FastWeightsConfig, exist_ok=True)
    AutoModelForCausalLM.register(FastWeightsConfig, FastWeightsForCausalLM, exist_ok=True)
    _registered = True


def _register_or_warn() -> None:
    try:
        register()
    except Exception as e:  # never break the user's import of transformers; say why the Auto classes lack us
        warnings.warn(f"fastweights: could not register the fastweights models with transformers' Auto classes "
                      f"({type(e).__name__}: {e}); import fastweights.hf to see the error", stacklevel=2)


class _AutoModelsWatcher:  # a meta path finder (importlib.abc is not imported: it is slow to import)
    """Finds nothing itself; when transformers' Auto models module is about to load, wraps its loader so that
    the registration runs right after the module has executed, then leaves ``sys.meta_path``."""

    def find_spec(self, name, path, target=None):
        if name != WATCHED:
            return None
        _uninstall()
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        loader = getattr(spec, "loader", None)
        if spec is None or not hasattr(loader, "exec_module"):
            return spec  # None: the next finders look as usual
        run = loader.exec_module

        def exec_module(module):
            run(module)
            _register_or_warn()

        loader.exec_module = exec_module  # this spec's own loader object: nothing else is affected
        return spec


def _uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AutoModelsWatcher)]


def install() -> None:
    """Registers now if transformers' Auto models are loaded, else when they load (see the module doc)."""
    if _registered:
        return
    if WATCHED in sys.modules:
        _register_or_warn()
    elif not any(isinstance(f, _AutoModelsWatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, _AutoModelsWatcher())
