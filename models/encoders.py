"""Encoders: torchvision ResNets with the ImageNet stem (the study's choice), classifier removed.

State-dict keys are exactly torchvision's (minus `fc.*`), so torchvision and study weights map 1:1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

# architecture -> (block, layers), as in torchvision.models.resnet18/34/50
ARCHITECTURES = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


class ResNetEncoder(ResNet):
    """Images (N, C, H, W), normalised -> features (N, feature_dim).

    Grey images (C=1) are accepted by a 3-channel stem: convolving a grey image repeated three times
    equals convolving it once with the kernel summed over input channels, which is what we do (no copy).
    """

    def __init__(self, arch: str = "resnet18", in_channels: int = 3):
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
        block, layers = ARCHITECTURES[arch]
        super().__init__(block, layers)
        self.arch, self.in_channels = arch, in_channels
        self.feature_dim = self.fc.in_features
        self.fc = nn.Identity()
        if in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)

    def accepts(self, channels: int) -> bool:
        return channels == self.in_channels or (channels == 1 and self.in_channels == 3)

    def stem_conv(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == self.in_channels:
            return self.conv1(x)
        if not self.accepts(x.shape[1]):
            raise ValueError(f"encoder takes {self.in_channels}-channel images, got {x.shape[1]} channels")
        weight = self.conv1.weight.sum(dim=1, keepdim=True)  # (64, 1, 7, 7): grey expanded to RGB
        return F.conv2d(x, weight, stride=self.conv1.stride, padding=self.conv1.padding)

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.stem_conv(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)  # (N, feature_dim)
