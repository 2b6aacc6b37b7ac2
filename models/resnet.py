"""ResNet encoders (torchvision's ResNet-18/34/50, classifier removed) with either of two stems.

- `imagenet`: 7x7 stride-2 convolution + 3x3 stride-2 max-pool, as torchvision and the study
  (a 28 px image reaches the first residual block as 7x7).
- `small`: 3x3 stride-1 convolution, no max-pool, as every SSL benchmark on 32 px images uses
  (SimCLR paper, appendix B.9; lightly's and solo-learn's CIFAR set-ups): 16x the compute at 28 px.

State-dict keys are exactly torchvision's (minus `fc.*`), so torchvision and study weights map 1:1.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from models.stem import StemConv2d
from models.choices import STEMS

# depth -> (block, layers), as in torchvision.models.resnet18/34/50
DEPTHS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}
STEM_WIDTH = 64  # torchvision's conv1 output channels


class ResNetEncoder(ResNet):
    """Images (N, C, H, W), normalised -> features (N, feature_dim): 512 (ResNet-18/34) or 2048 (ResNet-50)."""

    def __init__(self, depth: str = "resnet18", in_channels: int = 3, stem: str = "imagenet"):
        if depth not in DEPTHS:
            raise ValueError(f"unknown ResNet {depth!r}; choose one of {', '.join(DEPTHS)}")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
        block, layers = DEPTHS[depth]
        super().__init__(block, layers)
        (kernel, stride, padding), max_pool = STEMS[stem]
        self.in_channels, self.stem = in_channels, stem
        self.conv1 = StemConv2d(in_channels, STEM_WIDTH, kernel, stride, padding, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision's init
        if not max_pool:
            self.maxpool = nn.Identity()
        self.feature_dim = self.fc.in_features
        self.stage_widths = tuple(width * block.expansion for width in (64, 128, 256, 512))  # torchvision's
        self.fc = nn.Identity()

    def stage_outputs(self, x: torch.Tensor, upto: int = 4) -> list[torch.Tensor]:
        """The outputs (N, C_k, H_k, W_k) of layer1 to layer`upto`."""
        x, outputs = self.maxpool(self.relu(self.bn1(self.conv1(x)))), []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4)[:upto]:
            x = layer(x)
            outputs.append(x)
        return outputs

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.stage_outputs(x)[-1]), 1)  # (N, feature_dim)
