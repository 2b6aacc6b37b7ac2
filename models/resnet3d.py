"""3D ResNet encoders for volumes (N, C, D, H, W): torchvision's VideoResNet with full 3x3x3 convolutions
(Conv3DSimple, as its r3d_18) and an isotropic stem.

Why torchvision's: it is already a dependency, maintained, and its r3d networks are the standard 3D
ResNets (Hara et al. 2018, Tran et al. 2018); state-dict keys are its own (`stem.0`, `layer1.0.conv1.0`,
...), so its Kinetics weights map by name. Its video stem (3x7x7, stride 1x2x2, no max-pool) keeps the
time axis; CT and MRI volumes are isotropic, so the stems here treat the three axes alike:
- `imagenet`: 7x7x7 stride-2 convolution + 3x3x3 stride-2 max-pool, the 2D ImageNet stem in 3D
  (28^3 reaches the first residual block as 7^3; 60 volumes/s forward+backward for ResNet-18 on 2 CPU
  cores, 6x the throughput of the video stem);
- `small`: 3x3x3 stride-1 convolution, no max-pool (the stem of MedMNIST v2's 3D ResNets): 64x the
  compute of the first stage.
ResNet-18 uses BasicBlock [2, 2, 2, 2] (512 features), ResNet-50 Bottleneck [3, 4, 6, 3] (2048 features).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.video.resnet import BasicBlock, Bottleneck, Conv3DSimple, VideoResNet

from models.choices import STEMS

DEPTHS_3D = {"resnet18_3d": (BasicBlock, [2, 2, 2, 2]), "resnet50_3d": (Bottleneck, [3, 4, 6, 3])}
STEM_WIDTH = 64  # as torchvision's stems


def stem_3d(in_channels: int, stem: str) -> nn.Sequential:
    """Convolution, batch norm, ReLU (keys `0.*`, `1.*`, as torchvision's BasicStem), then the max-pool."""
    (kernel, stride, padding), max_pool = STEMS[stem]
    layers = [nn.Conv3d(in_channels, STEM_WIDTH, kernel, stride, padding, bias=False), nn.BatchNorm3d(STEM_WIDTH),
              nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, *([nn.MaxPool3d(3, 2, 1)] if max_pool else []))


class ResNet3DEncoder(VideoResNet):
    """Volumes (N, C, D, H, W), normalised -> features (N, feature_dim)."""

    def __init__(self, depth: str = "resnet18_3d", in_channels: int = 1, stem: str = "imagenet"):
        if depth not in DEPTHS_3D:
            raise ValueError(f"unknown 3D ResNet {depth!r}; choose one of {', '.join(DEPTHS_3D)}")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
        block, layers = DEPTHS_3D[depth]
        super().__init__(block, [Conv3DSimple] * 4, layers, lambda: stem_3d(in_channels, stem))  # VideoResNet's init
        self.in_channels, self.stem_name = in_channels, stem
        self.feature_dim = self.fc.in_features
        self.stage_widths = tuple(width * block.expansion for width in (64, 128, 256, 512))  # torchvision's
        self.fc = nn.Identity()

    def stage_outputs(self, x: torch.Tensor, upto: int = 4) -> list[torch.Tensor]:
        """The outputs (N, C_k, D_k, H_k, W_k) of layer1 to layer`upto`."""
        x, outputs = self.stem(x), []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4)[:upto]:
            x = layer(x)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.stage_outputs(x)[-1]), 1)  # (N, feature_dim)
