"""Tiny npz files in MedMNIST's own format (keys, dtypes, shapes), with learnable class patterns."""
from __future__ import annotations

from pathlib import Path

import medmnist
import numpy as np

# flag -> (train, val, test) sizes; flags chosen to cover grey binary, RGB multi-class and multi-label
SPLIT_SIZES = {"breastmnist": (48, 16, 16), "bloodmnist": (64, 24, 24), "chestmnist": (48, 16, 16),
               "retinamnist": (40, 16, 20), "dermamnist": (42, 14, 14)}


def make_split(flag: str, n: int, size: int, rng: np.random.Generator):
    info = medmnist.INFO[flag]
    k, channels = len(info["label"]), info["n_channels"]
    if info["task"].startswith("multi-label"):
        labels = (rng.random((n, k)) < 0.3).astype(np.uint8)
        level = labels[:, : min(k, 4)].sum(1)
    else:
        labels = (np.arange(n) % k)[:, None].astype(np.uint8)
        rng.shuffle(labels)
        level = labels[:, 0]
    base = rng.integers(0, 60, size=(n, size, size, channels))
    ramp = np.linspace(0, 1, size)[None, :, None, None] * (level[:, None, None, None] + 1) * 180 / k
    images = np.clip(base + ramp, 0, 255).astype(np.uint8)
    return (images[..., 0] if channels == 1 else images), labels


def write_npz(folder: Path, flag: str, size: int = 28, seed: int = 0, splits: tuple | None = None) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), splits or SPLIT_SIZES[flag]):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = make_split(flag, n, size, rng)
    path = Path(folder) / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")
    np.savez_compressed(path, **arrays)
    return path
