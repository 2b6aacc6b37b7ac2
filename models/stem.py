"""The first convolution of every backbone: takes the dataset's channels, and grey images on an RGB stem.

A 3-channel stem given a grey image convolves it with its kernel summed over the input channels, which
equals convolving the grey image repeated three times (no copy). So an encoder pretrained on RGB (the
study's checkpoints) also reads grey data, while new runs build the stem with the dataset's channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RGB = 3


class StemConv2d(nn.Conv2d):
    """nn.Conv2d (same state-dict keys) that also accepts 1-channel input when built for 3 channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == self.in_channels:
            return super().forward(x)
        if not accepts(self.in_channels, x.shape[1]):
            raise ValueError(f"the stem takes {self.in_channels}-channel images, got {x.shape[1]} channels")
        weight = self.weight.sum(dim=1, keepdim=True)  # (out, 1, k, k): grey expanded to RGB
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def accepts(in_channels: int, channels: int) -> bool:
    """Whether a stem built for `in_channels` can read images with `channels` channels."""
    return channels == in_channels or (channels == 1 and in_channels == RGB)
