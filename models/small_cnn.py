"""A small CNN for quick runs on a CPU: four 3x3 conv-BN-ReLU blocks, max-pooling between them.

At 28 px: 28 -> 14 -> 7 -> 3 spatially, widths 32-64-128-256, global average pool -> 256 features;
about 0.4 M parameters and 1/20 of a ResNet-18 with the ImageNet stem in multiply-adds.
"""
from __future__ import annotations

import torch
from torch import nn

from models.stem import StemConv2d

WIDTHS = (32, 64, 128, 256)  # ours: doubling per block, as VGG-style small nets (e.g. the MoCo CIFAR demo)


def conv_block(in_channels: int, out_channels: int, conv: type[nn.Conv2d] = nn.Conv2d) -> nn.Sequential:
    """3x3 convolution (no bias: BN follows), batch norm, ReLU; keys `0.*`, `1.*`."""
    return nn.Sequential(conv(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Images (N, C, H, W), normalised -> features (N, 256)."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.in_channels, self.feature_dim = in_channels, WIDTHS[-1]
        blocks = [conv_block(in_channels, WIDTHS[0], StemConv2d)]
        for previous, width in zip(WIDTHS, WIDTHS[1:]):
            blocks += [nn.MaxPool2d(2), conv_block(previous, width)]
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)
