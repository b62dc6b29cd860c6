"""fastweights: Fast Weight Programmers for PyTorch."""

__version__ = "0.1.0"
