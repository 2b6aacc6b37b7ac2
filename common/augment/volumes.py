"""Contrastive views of volumes (N, C, D, H, W), batched on the device, per-volume parameters from the seeded
generator: the 3D sequence `volume`, run by common.augment.images.Augmentation like the study's 2D sequences.

The study's sequences are for 2D photographs and colour; CT and MRI volumes have one channel and no preferred
orientation, so the 3D sequence uses the geometric and intensity transforms of medical 3D pipelines
(nnU-Net, Isensee et al. 2021: mirroring per axis, gamma, multiplicative brightness, Gaussian blur and noise)
with SimCLR's random resized crop in three dimensions, each applied more often than nnU-Net does (a
contrastive view needs strong augmentation; SimCLR applies its colour jitter with p = 0.8).
The pure ops live in common.augment.volume_ops.
"""
from __future__ import annotations

import math

import torch

from common.augment.volume_ops import PLANES, add_noise, adjust_gamma3d, gaussian_blur3d, resample3d, scale_shift
from common.augment.sampling import Generator, bernoulli, uniform
from common.augment.names import scaled_crop_scale, scaled_ranges

FLIP_P_3D = 0.5  # per axis: SimCLR's flip probability; nnU-Net mirrors each axis with 0.5 too
CROP_SCALE_3D = (0.25, 1.0)  # ours: fraction of the volume kept (each side >= 63% on average); SimCLR's 0.08 of an area
#                              would keep 43% of each side in 3D, losing small organs at the centre of a 28^3 crop
CROP_RATIO_3D = (3.0 / 4.0, 4.0 / 3.0)  # SimCLR's aspect ratio range, for each side against the cube root of the crop
ROTATE_P = 0.5  # ours: a quarter turn (1-3 of them) in one of the three planes, half of the time
INTENSITY_P = 0.8  # SimCLR's colour-jitter probability
INTENSITY_SCALE = (0.75, 1.25)  # nnU-Net's multiplicative brightness range
INTENSITY_SHIFT = (-0.1, 0.1)  # ours: an additive offset of up to a tenth of the range
INTENSITY_LIMITS = (0.9, 0.5)  # ours, for --aug-strength above 1: scale factor above 0.1, offset within half the range
GAMMA_P = 0.5
GAMMA_RANGE = (0.7, 1.5)  # nnU-Net's
BLUR_P_3D = 0.5  # SimCLR's blur probability
BLUR_SIGMA_3D = (0.5, 1.0)  # voxels: the lower half of nnU-Net's (0.5, 1.5), volumes here are 28-64 voxels wide
BLUR_KERNEL_3D = 7  # covers +-3 sigma of the largest sigma
NOISE_P = 0.5
NOISE_STD = (0.0, 0.05)  # ours: up to 5% of the intensity range


def sample_resized_crop3d(n: int, size: tuple[int, int, int], generator: Generator = None,
                          device: torch.device | str | None = None, scale: tuple[float, float] = CROP_SCALE_3D,
                          ratio: tuple[float, float] = CROP_RATIO_3D, tries: int = 10) -> torch.Tensor:
    """(n, 6) long boxes front, top, left, depth, height, width: a fraction `scale` of the volume, each side the
    cube root of that volume times a log-uniform factor in `ratio` (the third side making up the volume).
    Each sample takes its first box that fits out of `tries`; none fits -> the whole volume."""
    volume = size[0] * size[1] * size[2]
    target = volume * uniform(n * tries, *scale, generator, device).view(n, tries)
    log_r = uniform(2 * n * tries, math.log(ratio[0]), math.log(ratio[1]), generator, device).view(2, n, tries)
    side = target.pow(1.0 / 3.0)
    sides = torch.stack((side * log_r[0].exp(), side * log_r[1].exp(), side * (-log_r[0] - log_r[1]).exp()))
    sides = sides.round().long()  # (3, n, tries): depth, height, width
    limits = torch.tensor(size, device=sides.device).view(3, 1, 1)
    ok = ((sides > 0) & (sides <= limits)).all(0)  # (n, tries)
    first = ok.int().argmax(1, keepdim=True)
    chosen = sides.gather(2, first.view(1, n, 1).expand(3, n, 1)).squeeze(2)  # (3, n)
    chosen = torch.where(ok.any(1)[None], chosen, limits.view(3, 1))
    u = torch.rand(3, n, generator=generator, device=device)
    starts = (u * (limits.view(3, 1) - chosen + 1)).long()
    return torch.cat((starts, chosen)).T  # (n, 6)


# -------------------------------------------------------------- random steps
# Each step: (x (N, C, D, H, W), generator, size, strength) -> augmented x; the random crop, turns and flips are one
# step,
# so each view is resampled once.


def _crop_turn_flip(x, g, size, strength):
    n = len(x)
    boxes = sample_resized_crop3d(n, tuple(x.shape[-3:]), g, x.device, scaled_crop_scale(CROP_SCALE_3D, strength))
    turns = torch.randint(1, 4, (n,), generator=g, device=x.device) * bernoulli(n, ROTATE_P, g, x.device)
    plane = torch.randint(0, len(PLANES), (n,), generator=g, device=x.device)
    flips = torch.rand(n, 3, generator=g, device=x.device) < FLIP_P_3D
    return resample3d(x, boxes, size, turns, plane, flips)


def _intensity(x, g, size, strength):
    n = len(x)
    spread, offset = scaled_ranges((INTENSITY_SCALE[1] - 1, INTENSITY_SHIFT[1]), strength, INTENSITY_LIMITS)
    scale, shift = uniform(n, 1 - spread, 1 + spread, g, x.device), uniform(n, -offset, offset, g, x.device)
    keep = ~bernoulli(n, INTENSITY_P, g, x.device)
    return scale_shift(x, torch.where(keep, 1.0, scale), torch.where(keep, 0.0, shift))


def _gamma(x, g, size, strength):
    n = len(x)
    gamma = uniform(n, *GAMMA_RANGE, g, x.device)
    return adjust_gamma3d(x, torch.where(bernoulli(n, GAMMA_P, g, x.device), gamma, 1.0))


def _on_some(x, mask, op):
    """op applied to the volumes where mask (N,) is set, computed for those only; the others unchanged."""
    if not mask.any():
        return x
    out = x.clone()
    out[mask] = op(x[mask])
    return out


def _blur3d(x, g, size, strength):
    n = len(x)
    sigma, blurred = uniform(n, *BLUR_SIGMA_3D, g, x.device), bernoulli(n, BLUR_P_3D, g, x.device)
    return _on_some(x, blurred, lambda v: gaussian_blur3d(v, sigma[blurred], BLUR_KERNEL_3D))


def _noise(x, g, size, strength):
    n = len(x)
    std, noisy = uniform(n, *NOISE_STD, g, x.device), bernoulli(n, NOISE_P, g, x.device)
    return _on_some(x, noisy, lambda v: add_noise(v, std[noisy], torch.randn(v.shape, generator=g, device=v.device,
                                                                              dtype=v.dtype)))


STEPS_3D = {"crop_turn_flip": _crop_turn_flip, "intensity": _intensity, "gamma": _gamma, "blur3d": _blur3d,
            "noise": _noise}
