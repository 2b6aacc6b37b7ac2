"""Memory layout of network inputs and weights: channels-last for 2D images, channels-last-3d for volumes."""
from __future__ import annotations

import torch


def memory_format(dims: int, channels_last: bool = True) -> torch.memory_format:
    """The layout of a network over `dims`-dimensional images (2, or 3 for volumes)."""
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last_3d if dims == 3 else torch.channels_last


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A batch (N, C, H, W) or (N, C, D, H, W) in the channels-last layout of its rank."""
    return x.contiguous(memory_format=memory_format(x.dim() - 2))
