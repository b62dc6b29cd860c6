"""Stateless fast-weight recurrences. Each op has a step-loop reference and fast paths (``impl=``)."""

from .delta_rule import delta_rule
from .linear_attention import linear_attention

__all__ = ["delta_rule", "linear_attention"]
