"""SimCLR view augmentations for MedMNIST, batched on the input's device.

``Augmentation(name, size)(x, generator)`` turns a float batch (N, C, H, W) in [0, 1]
(C = 1 or 3) into one random view per image, with independent parameters per image
drawn from ``generator``; the 3D sequence (common.augment.volumes) does the same for volumes
(N, 1, D, H, W). The pure ops live in ``common.augment.image_ops`` and ``common.augment.volume_ops``.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch

from common.augment.volumes import STEPS_3D
from common.augment.image_ops import (color_jitter, equalize_luma, gaussian_blur, grayscale, hflip, resized_crop,
                                      sharpness)
from common.augment.sampling import Generator, bernoulli, uniform
from common.augment.names import (ALL_AUGMENTATIONS, AUG_STRENGTH, SEQUENCES, SEQUENCES_3D, augmentation_dims,
                                  scaled_crop_scale, scaled_ranges)

# Parameters of the study "Evaluating SimCLR for Medical Image Classification".
FLIP_P = 0.5
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
JITTER_P = 0.8
JITTER_STRONG = (0.5, 0.5, 0.5, 0.1)  # brightness, contrast, saturation, hue
JITTER_WEAK = (0.2, 0.2, 0.2, 0.04)
GREY_P = 0.2
BLUR_KERNEL = 9
BLUR_SIGMA = (0.1, 2.0)
EQUALIZE_P = 0.5
SHARPNESS_RANGE = (1.0, 10.0)  # factor, applied always
# ours, for --aug-strength above 1: brightness, contrast and saturation factors stay above 0.1, hue within torchvision's
JITTER_LIMITS = (0.9, 0.9, 0.9, 0.5)


# ----------------------------------------------------------------- sampling


def sample_resized_crop(n: int, height: int, width: int, generator: Generator = None,
                        device: torch.device | str | None = None,
                        scale: tuple[float, float] = CROP_SCALE,
                        ratio: tuple[float, float] = CROP_RATIO,
                        tries: int = 10) -> torch.Tensor:
    """``RandomResizedCrop.get_params`` vectorised: (n, 4) long top, left, height, width.

    Each sample takes its first valid try out of ``tries``; none valid -> centre crop.
    """
    area = height * width
    target = area * uniform(n * tries, *scale, generator, device).view(n, tries)
    log_r = uniform(n * tries, math.log(ratio[0]), math.log(ratio[1]), generator, device)
    aspect = torch.exp(log_r).view(n, tries)
    w = torch.sqrt(target * aspect).round().long()  # (n, tries), half to even as round()
    h = torch.sqrt(target / aspect).round().long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.int().argmax(1, keepdim=True)  # first valid try (0 if none)
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], ok.any(1)
    fh, fw = _fallback_crop(height, width, ratio)
    h, w = torch.where(found, h, fh), torch.where(found, w, fw)
    u = torch.rand(2, n, generator=generator, device=device)
    top = torch.where(found, (u[0] * (height - h + 1)).long(), (height - h) // 2)
    left = torch.where(found, (u[1] * (width - w + 1)).long(), (width - w) // 2)
    return torch.stack((top, left, h, w), 1)


def _fallback_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's central-crop fallback size (h, w)."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return int(round(width / min(ratio))), width
    if in_ratio > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def sample_jitter(n: int, strength: tuple[float, float, float, float],
                  generator: Generator = None, device: torch.device | str | None = None):
    """Factors as ColorJitter.get_params: b, c, s (n,) in [1-x, 1+x], hue (n,) in [-h, h],
    order (n, 4) a random permutation per sample."""
    b, c, s, h = strength
    factors = [uniform(n, max(0.0, 1 - v), 1 + v, generator, device) for v in (b, c, s)]
    hue = uniform(n, -h, h, generator, device)
    order = torch.rand(n, 4, generator=generator, device=device).argsort(1)
    return (*factors, hue, order)


# -------------------------------------------------------------- random steps
# Each step: (x (N, C, H, W), generator, size, strength) -> augmented x; strength: --aug-strength (common.augment.names).


def _flip(x, g, size, strength):
    return hflip(x, bernoulli(len(x), FLIP_P, g, x.device))


def _crop(x, g, size, strength):
    boxes = sample_resized_crop(len(x), x.shape[-2], x.shape[-1], g, x.device, scaled_crop_scale(CROP_SCALE, strength))
    return resized_crop(x, boxes, size)


def _jitter(x, g, size, strength, ranges):
    params = sample_jitter(len(x), scaled_ranges(ranges, strength, JITTER_LIMITS), g, x.device)
    return color_jitter(x, *params, mask=bernoulli(len(x), JITTER_P, g, x.device))


def _grey(x, g, size, strength):
    return grayscale(x, bernoulli(len(x), GREY_P, g, x.device))


def _blur(x, g, size, strength):
    return gaussian_blur(x, uniform(len(x), *BLUR_SIGMA, g, x.device), BLUR_KERNEL)


def _equalize(x, g, size, strength):
    return equalize_luma(x, bernoulli(len(x), EQUALIZE_P, g, x.device))


def _sharpness(x, g, size, strength):
    return sharpness(x, uniform(len(x), *SHARPNESS_RANGE, g, x.device))


STEPS: dict[str, Callable] = {
    "flip": _flip, "crop": _crop, "grey": _grey, "blur": _blur,
    "jitter_strong": partial(_jitter, ranges=JITTER_STRONG),
    "jitter_weak": partial(_jitter, ranges=JITTER_WEAK),
    "equalize": _equalize, "sharpness": _sharpness,
    **STEPS_3D,
}


class Augmentation(torch.nn.Module):
    """One of the study's sequences (or the 3D one); forward(x, generator) -> one view per image. `strength`
    (--aug-strength, common.augment.names): 1 is the sequence as published."""

    def __init__(self, name: str, size: int, strength: float = AUG_STRENGTH):
        super().__init__()
        if not strength > 0:
            raise ValueError(f"augmentation strength must be positive, got {strength}")
        sequences = {**SEQUENCES, **SEQUENCES_3D}
        if name not in sequences:
            raise ValueError(f"unknown augmentation {name!r}; valid: {', '.join(ALL_AUGMENTATIONS)}")
        self.name, self.size, self.dims = name, int(size), augmentation_dims(name)
        self.steps, self.strength = sequences[name], float(strength)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x (N, C, H, W) float in [0, 1] -> (N, C, size, size), same dtype and device; for a 3D sequence
        x (N, C, D, H, W) -> (N, C, size, size, size)."""
        if x.dim() != 2 + self.dims:
            raise ValueError(f"augmentation {self.name!r} takes {2 + self.dims}-d batches, got shape {tuple(x.shape)}")
        for step in self.steps:
            x = STEPS[step](x, generator, self.size, self.strength)
        return x.clamp(0.0, 1.0)  # blur/crop can overshoot 1 by float rounding

    def extra_repr(self) -> str:
        return f"name={self.name!r}, size={self.size}, strength={self.strength:g}, steps={self.steps}"


def build_augmentation(name: str, size: int, strength: float = AUG_STRENGTH) -> Augmentation:
    return Augmentation(name, size, strength)
