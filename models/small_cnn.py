"""A small CNN for quick runs on a CPU: four 3x3 conv-BN-ReLU blocks, max-pooling between them.

At 28 px: 28 -> 14 -> 7 -> 3 spatially, widths 32-64-128-256, global average pool -> 256 features;
about 0.4 M parameters and 1/20 of a ResNet-18 with the ImageNet stem in multiply-adds. With `dims=3` the same
network for volumes (3x3x3 convolutions, 1.2 M parameters), the registry's `small_cnn_3d`.
"""
from __future__ import annotations

import torch
from torch import nn

from models.stem import StemConv2d

WIDTHS = (32, 64, 128, 256)  # ours: doubling per block, as VGG-style small nets (e.g. the MoCo CIFAR demo)


# spatial dims -> (convolution, batch norm, max-pool, global pool)
LAYERS = {2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d),
          3: (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.AdaptiveAvgPool3d)}


def conv_block(in_channels: int, out_channels: int, conv: type[nn.Module] = nn.Conv2d,
               norm: type[nn.Module] = nn.BatchNorm2d) -> nn.Sequential:
    """3x3 convolution (no bias: BN follows), batch norm, ReLU; keys `0.*`, `1.*`."""
    return nn.Sequential(conv(in_channels, out_channels, 3, padding=1, bias=False), norm(out_channels),
                         nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Images (N, C, H, W) (or volumes (N, C, D, H, W) with dims=3), normalised -> features (N, 256)."""

    def __init__(self, in_channels: int = 3, dims: int = 2):
        super().__init__()
        self.in_channels, self.feature_dim, self.stage_widths = in_channels, WIDTHS[-1], WIDTHS
        conv, norm, max_pool, global_pool = LAYERS[dims]
        blocks = [conv_block(in_channels, WIDTHS[0], StemConv2d if dims == 2 else conv, norm)]
        for previous, width in zip(WIDTHS, WIDTHS[1:]):
            blocks += [max_pool(2), conv_block(previous, width, conv, norm)]
        self.features = nn.Sequential(*blocks)
        self.pool = global_pool(1)

    def stage_outputs(self, x: torch.Tensor, upto: int = len(WIDTHS)) -> list[torch.Tensor]:
        """The outputs of conv blocks 1 to `upto` (block 1 at full resolution, each next after a 2x max-pool)."""
        outputs = []
        for layer in self.features:
            x = layer(x)
            if not isinstance(layer, nn.modules.pooling._MaxPoolNd):
                outputs.append(x)
                if len(outputs) == upto:
                    break
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)
