"""Volumes as pictures: the three mid-slices of each volume side by side, for grids of images and views."""
from __future__ import annotations

import torch


def mid_slices(volumes: torch.Tensor) -> torch.Tensor:
    """Cubic volumes (N, C, S, S, S) -> (N, C, S, 3 S): the mid-slices across D, H and W (axial, coronal and
    sagittal for CT in MedMNIST's orientation), left to right. Images (N, C, H, W) pass unchanged."""
    if volumes.dim() == 4:
        return volumes
    d, h, w = volumes.shape[-3:]
    return torch.cat((volumes[:, :, d // 2], volumes[:, :, :, h // 2], volumes[:, :, :, :, w // 2]), dim=-1)
