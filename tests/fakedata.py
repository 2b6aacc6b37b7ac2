"""Tiny npz files in MedMNIST's own format for the tests (the generator is common/synthetic.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.synthetic import write_synthetic

SIZE = 28

# flag -> (train, val, test) sizes; flags chosen to cover grey binary, RGB multi-class and multi-label
SPLIT_SIZES = {"breastmnist": (48, 16, 16), "bloodmnist": (64, 24, 24), "chestmnist": (48, 16, 16),
               "retinamnist": (40, 16, 20), "dermamnist": (42, 14, 14)}


def write_npz(folder: Path, flag: str, size: int = 28, seed: int = 0, splits: tuple | None = None) -> Path:
    return write_synthetic(folder, flag, size, seed, splits or SPLIT_SIZES[flag], compress=True)


def write_stripes(folder: Path, flag: str = "breastmnist", splits: tuple = (256, 64, 128), seed: int = 0) -> Path:
    """Grey images whose class is the orientation of faint stripes (0: horizontal, 1: vertical), under a
    random brightness and contrast that dominate the pixels. The orientation survives every augmentation
    (crops, flips, jitter), the brightness does not: an encoder pretrained with them should read the
    orientation, which a random-init encoder's features hardly separate from the brightness."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    arrays = {}
    for split, n in zip(("train", "val", "test"), splits):
        labels = np.arange(n) % 2
        rng.shuffle(labels)
        period = rng.uniform(3, 6, (n, 1, 1))
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
        coordinate = np.where(labels[:, None, None] == 0, rows, cols)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * coordinate / period + phase)
        brightness, contrast = rng.uniform(0.05, 0.6, (n, 1, 1)), rng.uniform(0.15, 0.4, (n, 1, 1))
        images = brightness + contrast * stripes + rng.normal(0, 0.05, (n, SIZE, SIZE))
        arrays[f"{split}_images"] = (np.clip(images, 0, 1) * 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels[:, None].astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{flag}.npz"
    np.savez_compressed(path, **arrays)
    return path
