"""fastweights: Fast Weight Programmers for PyTorch."""

__version__ = "0.1.0"

from .hf._hook import install as _install_hf_hook  # noqa: E402  (registers with transformers' Auto classes
_install_hf_hook()  # once they are imported; imports nothing now: see fastweights/hf/_hook.py)
