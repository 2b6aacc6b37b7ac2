"""Pixel scaling shared by all stages: uint8 images -> floats in [0, 1] -> normalised."""
from __future__ import annotations

import torch

MEAN, STD = 0.5, 0.5  # the study's normalisation, for grey and RGB alike


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1]."""
    return images.float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Floats in [0, 1] -> the network's input range [-1, 1]."""
    return (x - MEAN) / STD
