"""Upsampling on the device, in front of a network: `--resize 64` trains and evaluates a network at 64 px on
28 px data (MedMNIST+ reports frozen features gaining from 28 to 64 px) without a 64 px copy of the data set.

The backbone registry installs it as a forward pre-hook, so the network's state-dict keys are its own and
every stage that rebuilds the encoder from a checkpoint's recorded options resizes alike.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MODES = {2: "bilinear", 3: "trilinear"}  # as torchvision's Resize on tensors; upsampling needs no antialiasing


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size) by bilinear interpolation (align_corners=False), volumes (N, C, D, H, W)
    -> (N, C, size, size, size) by trilinear; unchanged at that size."""
    dims = images.dim() - 2
    if images.shape[2:] == (size,) * dims:
        return images
    return F.interpolate(images, size=(size,) * dims, mode=MODES[dims], align_corners=False)


class InputResize:
    """A forward pre-hook resizing a network's input images to `size` px."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, module: nn.Module, inputs: tuple) -> tuple:
        return (resize_images(inputs[0], self.size), *inputs[1:])
