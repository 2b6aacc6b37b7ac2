"""Raw pixels as features: the reference every probe result is set against (no network, nothing learnt).

A linear probe on them is a logistic regression on the normalised pixel values; with the L-BFGS probe,
which standardises every feature, it is scikit-learn's usual baseline on standardised pixels.

Very large inputs are read average-pooled: by the smallest whole factor f that leaves at most MAX_FEATURES values
(each side becomes ceil(side / f), areas averaged), so a 64^3 volume is read at 32^3 and a colour 224^2 image at
75^2; MedMNIST's 28 and 64 px images and 28^3 volumes are read whole.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from models.choices import PIXELS

MAX_FEATURES = 32768  # ours: the L-BFGS probe on 64^3 = 262,144 raw voxels took over 10 min per label-efficiency cell
                      # on a 2-core CPU; 32^3 keeps it to about an eighth of that, and 28^3 (21,952) stays whole


def pooling_factor(in_channels: int, size: int, dims: int, max_features: int | None = None) -> int:
    """The smallest whole f with in_channels * ceil(size / f) ** dims <= max_features (default MAX_FEATURES;
    1: read whole)."""
    max_features = MAX_FEATURES if max_features is None else max_features
    factor = 1
    while in_channels * math.ceil(size / factor) ** dims > max_features and factor < size:
        factor += 1
    return factor


class RawPixels(nn.Module):
    """Normalised images (N, C, H, W) (volumes: (N, C, D, H, W), dims 3) -> their pixels (N, C * H * W (* D)),
    average-pooled by `pool` (pooling_factor) when they have more than MAX_FEATURES values."""

    def __init__(self, in_channels: int, size: int, dims: int = 2):
        super().__init__()
        self.pool = pooling_factor(in_channels, size, dims)
        self.side = math.ceil(size / self.pool)
        self.dims, self.in_channels, self.feature_dim = dims, in_channels, in_channels * self.side ** dims
        self.backbone_options = {"backbone": PIXELS, "stem": None, "in_channels": in_channels, "size": size,
                                 "resize": None, "dims": dims, "pool": self.pool}

    def describe(self) -> str:
        """One line on what is read: the pixels whole, or pooled (for the note a pooled reference prints)."""
        grid = "x".join([str(self.side)] * self.dims)
        return (f"the raw pixels whole ({self.feature_dim:,} values)" if self.pool == 1 else
                f"the raw pixels average-pooled {self.pool}x to {grid} ({self.feature_dim:,} values, at most "
                f"{MAX_FEATURES:,}: models/pixels.py)")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.pool > 1:
            pool = F.adaptive_avg_pool3d if self.dims == 3 else F.adaptive_avg_pool2d
            images = pool(images, self.side)
        return images.flatten(1)
