"""The augmentation sequences by name, for images and volumes, and their strength: the command line's choices,
without torch (common.augment.images and common.augment.volumes implement the steps).
"""
from __future__ import annotations

# The study's four sequences, applied in this order to each view.
SEQUENCES = {
    "natural": ("flip", "crop", "jitter_strong", "grey", "blur"),
    "simple": ("crop", "jitter_strong", "blur"),
    "novel": ("flip", "crop", "jitter_weak", "grey", "blur", "equalize", "sharpness"),
    "greyscale": ("flip", "crop", "blur", "equalize", "sharpness"),
}
# ours: one random resized crop, quarter turn and flips per view (one resampling), then intensity, gamma, blur, noise
SEQUENCES_3D = {"volume": ("crop_turn_flip", "intensity", "gamma", "blur3d", "noise")}
AUGMENTATIONS = tuple(SEQUENCES)  # ("natural", "simple", "novel", "greyscale"): for images
AUGMENTATIONS_3D = tuple(SEQUENCES_3D)  # ("volume",): for volumes
ALL_AUGMENTATIONS = AUGMENTATIONS + AUGMENTATIONS_3D

# --aug-strength s scales how far a view strays from its image: the random crop's smallest share of the image,
# 1 - s * (1 - smallest share at s = 1), and the colour jitter's (intensity's, for volumes) ranges, times s.
# 1 is the study's sequences as published.
AUG_STRENGTH = 1.0


def default_augmentation(dims: int) -> str:
    """--aug when not given: the study's `novel` for images, `volume` for volumes."""
    return AUGMENTATIONS_3D[0] if dims == 3 else "novel"


def augmentation_dims(name: str) -> int:
    return 3 if name in SEQUENCES_3D else 2


def scaled_crop_scale(scale: tuple[float, float], strength: float, floor: float = 0.01) -> tuple[float, float]:
    """The random crop's (smallest, largest) share of the image at `strength`: the smallest share moves from 1 (no
    crop, strength 0) through `scale[0]` (strength 1) and beyond, not below `floor`."""
    low = 1.0 - strength * (1.0 - scale[0])
    return (min(max(low, floor), scale[1]), scale[1])


def scaled_ranges(ranges: tuple[float, ...], strength: float, limits: tuple[float, ...]) -> tuple[float, ...]:
    """Jitter magnitudes (brightness, contrast, saturation, hue, ...) times `strength`, each capped at its limit."""
    return tuple(min(value * strength, limit) for value, limit in zip(ranges, limits))
