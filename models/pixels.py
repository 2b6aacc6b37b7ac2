"""Raw pixels as features: the reference every probe result is set against (no network, nothing learnt).

A linear probe on them is a logistic regression on the normalised pixel values; with the L-BFGS probe,
which standardises every feature, it is scikit-learn's usual baseline on standardised pixels.
"""
from __future__ import annotations

import torch
from torch import nn

from models.names import PIXELS



class RawPixels(nn.Module):
    """Normalised images (N, C, H, W) (volumes: (N, C, D, H, W), dims 3) -> their pixels (N, C * H * W (* D))."""

    def __init__(self, in_channels: int, size: int, dims: int = 2):
        super().__init__()
        self.in_channels, self.feature_dim = in_channels, in_channels * size ** dims
        self.backbone_options = {"backbone": PIXELS, "stem": None, "in_channels": in_channels, "size": size,
                                 "resize": None, "dims": dims}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)
