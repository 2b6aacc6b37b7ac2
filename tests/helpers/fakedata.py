"""Tiny npz files in MedMNIST's own format for the tests (the generator is common/data/synthetic.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.data.synthetic import write_synthetic

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


def write_textures_3d(folder: Path, flag: str = "adrenalmnist3d", splits: tuple = (128, 32, 64), seed: int = 0,
                      size: int = SIZE) -> Path:
    """Volumes whose class is the direction of faint stripes: 0 along one of the three axes, 1 along a diagonal of
    one of the three planes, under a random brightness and contrast that dominate the voxels. The class survives
    every 3D augmentation (flips and quarter turns map axes to axes and diagonals to diagonals, crops rescale,
    intensity and blur keep the stripes), the brightness does not; both classes have the same voxel statistics."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.mgrid[0:size, 0:size, 0:size]).astype(np.float32)  # (3, S, S, S)
    arrays = {}
    for split, n in zip(("train", "val", "test"), splits):
        labels = np.arange(n) % 2
        rng.shuffle(labels)
        volumes = np.empty((n, size, size, size), dtype=np.uint8)
        for i, label in enumerate(labels):
            a, b = rng.choice(3, 2, replace=False)
            coordinate = grid[a] if label == 0 else (grid[a] + rng.choice((-1, 1)) * grid[b]) / np.sqrt(2)
            stripes = 0.5 + 0.5 * np.sin(2 * np.pi * coordinate / rng.uniform(3, 6) + rng.uniform(0, 2 * np.pi))
            brightness, contrast = rng.uniform(0.05, 0.6), rng.uniform(0.15, 0.4)
            volume = brightness + contrast * stripes + rng.normal(0, 0.05, stripes.shape)
            volumes[i] = (np.clip(volume, 0, 1) * 255).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = volumes, labels[:, None].astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"{flag}.npz" if size == SIZE else f"{flag}_{size}.npz")
    np.savez_compressed(path, **arrays)
    return path
