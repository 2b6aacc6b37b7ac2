"""Batched, per-volume operations on (N, C, D, H, W) float tensors in [0, 1].

Every op takes explicit per-volume parameter tensors; tests/common/augment/test_augment3d.py checks each against the same
operation written plainly, one volume at a time (F.interpolate then torch.rot90 and torch.flip, a full 3D
Gaussian kernel with reflect padding).
"""
from __future__ import annotations

import torch

from common.augment.image_ops import gaussian_kernels

Tensor = torch.Tensor
PLANES = ((2, 3), (2, 4), (3, 4))  # the (D, H), (D, W) and (H, W) planes of a (N, C, D, H, W) batch


def _col(v: Tensor) -> Tensor:
    """(N,) -> (N, 1, 1, 1, 1) for broadcasting against volumes."""
    return v.view(-1, 1, 1, 1, 1)


# ----------------------------------------------------------------- geometry


def axis_maps(turns: Tensor, plane: Tensor, flips: Tensor) -> tuple[Tensor, Tensor]:
    """The voxel map of `rot90` by turns[n] (0-3) in plane PLANES[plane[n]], then flips (N, 3) of the D, H, W axes:
    (src, rev), each (N, 3). Axis c of the volume before them is indexed at output voxel o by o[src[n, c]], read
    backwards (S - 1 - o[...]) where rev[n, c]."""
    n = len(turns)
    src = torch.arange(3, device=turns.device).expand(n, 3).clone()  # the flips: axis c reads output axis c
    rev = flips.clone()
    rows = torch.arange(n, device=turns.device)
    pair = torch.tensor(PLANES, device=turns.device)[plane] - 2  # (N, 2): the plane's axes a, b
    a, b = pair[:, 0], pair[:, 1]
    for turn in range(1, 4):  # torch.rot90 by one turn: y[.., i_a, .., i_b] = x[.., i_b, .., S - 1 - i_a]
        on = turns % 4 >= turn
        src_a, src_b, rev_a, rev_b = src[rows, a], src[rows, b], rev[rows, a], rev[rows, b]
        src[rows, a], rev[rows, a] = torch.where(on, src_b, src_a), torch.where(on, rev_b, rev_a)
        src[rows, b], rev[rows, b] = torch.where(on, src_a, src_b), torch.where(on, ~rev_a, rev_b)
    return src, rev


def interpolation_matrices(start: Tensor, extent: Tensor, full: int, size: int, dtype: torch.dtype) -> Tensor:
    """(N, size, full): row i holds the linear-interpolation weights by which output voxel i of a crop [start, start +
    extent) resized to `size` reads the axis, sampled as F.interpolate(align_corners=False) samples the crop."""
    o = torch.arange(size, device=start.device, dtype=torch.float32) + 0.5
    src = torch.minimum((o * (extent / size)[:, None] - 0.5).clamp(min=0.0), (extent - 1)[:, None])
    src = start[:, None] + src  # (N, S) in voxels of the axis
    low = src.floor()
    weight_high = (src - low).to(dtype)
    low = low.long()
    high = (low + 1).clamp(max=full - 1)  # past the last voxel only with weight 0
    matrices = torch.zeros(len(start), size, full, dtype=dtype, device=start.device)
    matrices.scatter_add_(2, low[..., None], (1 - weight_high)[..., None])
    return matrices.scatter_add_(2, high[..., None], weight_high[..., None])


def resample3d(x: Tensor, boxes: Tensor, size: int, turns: Tensor, plane: Tensor, flips: Tensor) -> Tensor:
    """Crop boxes (N, 6) = front, top, left, depth, height, width, resize each crop to size^3 (trilinear, sampled as
    ``F.interpolate(mode="trilinear", align_corners=False)`` samples the crop, like common.augment.image_ops.resized_crop
    in 2D), turn it by turns[n] quarter turns in plane PLANES[plane[n]] (as torch.rot90) and flip it along the axes
    where flips (N, 3) is set. One resampling: trilinear interpolation is separable, so each axis is one batched
    matrix product (reversed rows for a reversed axis), and the turns permute the axes of the volumes that have
    them; on a CPU several times faster than a 3D grid_sample."""
    b = boxes.to(device=x.device, dtype=torch.float32)
    src, rev = axis_maps(turns.to(x.device), plane.to(x.device), flips.to(x.device))
    matrices = []
    for c, full in enumerate(x.shape[-3:]):  # input axis c = D, H, W
        m = interpolation_matrices(b[:, c], b[:, 3 + c], full, size, x.dtype)
        matrices.append(torch.where(rev[:, c, None, None], m.flip(1), m))
    y = torch.einsum("ncdhw,nvw->ncdhv", x, matrices[2])
    y = torch.einsum("ncdhw,nvh->ncdvw", y, matrices[1])
    y = torch.einsum("ncdhw,nvd->ncvhw", y, matrices[0])  # (N, C, S, S, S); axis c holds output axis src[c]
    moved = (src != torch.arange(3, device=x.device)).any(1)
    if not moved.any():
        return y
    out = y.clone()
    for order in src[moved].unique(dim=0):  # the volumes turned in a plane: move axis c to position src[c]
        idx = (src == order).all(1).nonzero().squeeze(1)
        out[idx] = y[idx].permute(0, 1, *(2 + order.argsort()).tolist())
    return out


# ---------------------------------------------------------------- intensity


def scale_shift(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """x * scale + shift per volume, clamped to [0, 1]."""
    return (x * _col(scale).to(x.dtype) + _col(shift).to(x.dtype)).clamp(0.0, 1.0)


def adjust_gamma3d(x: Tensor, gamma: Tensor) -> Tensor:
    """x ** gamma per volume (x in [0, 1], so the range is kept)."""
    return x.clamp(0.0, 1.0).pow(_col(gamma).to(x.dtype))


def add_noise(x: Tensor, std: Tensor, noise: Tensor) -> Tensor:
    """x + std * noise per volume (noise: standard normal, x's shape), clamped to [0, 1]."""
    return (x + _col(std).to(x.dtype) * noise).clamp(0.0, 1.0)


# ------------------------------------------------------------------ filters


def blur_matrices(sigma: Tensor, kernel_size: int, length: int, dtype: torch.dtype) -> Tensor:
    """(N, L, L): row i holds the weights of a 1-D Gaussian blur of sigma[n] at position i, reflect padding folded in
    (a tap past an end reads the voxel mirrored about it, as F.pad(mode="reflect")), so x @ M.T blurs along an axis."""
    kernels = gaussian_kernels(sigma, kernel_size, dtype)  # (N, K)
    pad = kernel_size // 2
    taps = torch.arange(length, device=sigma.device)[:, None] + torch.arange(-pad, pad + 1, device=sigma.device)
    taps = taps.abs()  # reflect at the start
    taps = torch.where(taps > length - 1, 2 * (length - 1) - taps, taps)  # and at the end
    matrices = torch.zeros(len(sigma), length, length, dtype=dtype, device=sigma.device)
    index = taps.expand(len(sigma), length, kernel_size)
    return matrices.scatter_add_(2, index, kernels[:, None, :].expand(-1, length, -1))


def gaussian_blur3d(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable per-volume Gaussian blur with reflect padding: along each axis, a batched matrix product with
    that volume's blur matrix (faster on a CPU than grouped 3D convolutions)."""
    n, c, d, h, w = x.shape
    if not (d == h == w):
        raise ValueError(f"gaussian_blur3d takes cubic volumes, got {tuple(x.shape)}")
    m = blur_matrices(sigma, kernel_size, d, x.dtype)  # (N, S, S)
    y = torch.einsum("ncdhw,nvw->ncdhv", x, m)
    y = torch.einsum("ncdhw,nvh->ncdvw", y, m)
    return torch.einsum("ncdhw,nvd->ncvhw", y, m)
