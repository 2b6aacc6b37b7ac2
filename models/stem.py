"""The first convolution of every backbone: takes the dataset's channels, grey images on an RGB stem and colour
images on a grey stem.

A 3-channel stem given a grey image convolves it with its kernel summed over the input channels, which
equals convolving the grey image repeated three times (no copy). So an encoder pretrained on RGB (the
study's checkpoints) also reads grey data, while new runs build the stem with the dataset's channels.
A 1-channel stem given an RGB image convolves it with its kernel times the luminance weights (LUMA), which equals
convolving the image's luminance (the normalisation is the same for every channel, so it commutes): an encoder
pretrained on grey X-rays reads colour data.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RGB = 3
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luminance, as Pillow's convert("L")


class StemConv2d(nn.Conv2d):
    """nn.Conv2d (same state-dict keys) that also accepts 1-channel input when built for 3 channels, and 3-channel
    input when built for 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == self.in_channels:
            return super().forward(x)
        if not accepts(self.in_channels, x.shape[1]):
            raise ValueError(f"the stem takes {self.in_channels}-channel images, got {x.shape[1]} channels")
        if self.in_channels == 1:  # (out, 3, k, k): the luminance of RGB
            weight = self.weight * self.weight.new_tensor(LUMA).view(1, RGB, 1, 1)
        else:
            weight = self.weight.sum(dim=1, keepdim=True)  # (out, 1, k, k): grey expanded to RGB
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def accepts(in_channels: int, channels: int) -> bool:
    """Whether a stem built for `in_channels` can read images with `channels` channels."""
    return channels == in_channels or {channels, in_channels} == {1, RGB}


def conversion_note(in_channels: int, channels: int) -> str | None:
    """The one-line note when an encoder reads images of other channels than it was built for."""
    if in_channels == channels:
        return None
    if in_channels == 1:
        return "note: the encoder was pretrained on grey images and reads these colour images as their luminance"
    return "note: the encoder was pretrained on colour images and reads these grey images repeated into 3 channels"
