"""Layout helpers for the chunkwise-parallel paths: ``[B, T, H, D]`` <-> ``[B*H, N, C, D]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_chunks(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``[B, T, H, *D]`` -> ``[B*H, N, C, *D]`` with T zero-padded up to ``N*C``."""
    B, T, H = x.shape[:3]
    rest = x.shape[3:]
    n = -(-T // chunk_size)
    x = x.transpose(1, 2)  # [B, H, T, *D]
    pad = n * chunk_size - T
    if pad:
        x = F.pad(x, (0, 0) * len(rest) + (0, pad))
    return x.reshape(B * H, n, chunk_size, *rest)


def from_chunks(x: torch.Tensor, B: int, H: int, T: int) -> torch.Tensor:
    """``[B*H, N, C, *D]`` -> ``[B, T, H, *D]`` (drops the padding)."""
    rest = x.shape[3:]
    x = x.reshape(B, H, -1, *rest)[:, :, :T]
    return x.transpose(1, 2)
