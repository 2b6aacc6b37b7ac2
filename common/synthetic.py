"""Synthetic datasets in MedMNIST's own npz format (keys, dtypes, shapes), with learnable class patterns:
for the benchmark where a real file is missing, and for the tests."""
from __future__ import annotations

from pathlib import Path

import medmnist
import numpy as np

from common.data import SPLITS, is_multilabel, npz_path, spatial_dims


def synthetic_split(flag: str, n: int, size: int, rng: np.random.Generator):
    """n images (volumes for a 3D flag) and labels of `flag`'s shape and classes; each image is noise plus a
    horizontal ramp whose strength depends on its label. Written chunk by chunk: large flags at 224 px need no
    float copy of the whole split."""
    info, dims = medmnist.INFO[flag], spatial_dims(flag)
    k, channels = len(info["label"]), info["n_channels"]
    if is_multilabel(info):
        labels = (rng.random((n, k)) < 0.3).astype(np.uint8)
        level = labels[:, : min(k, 4)].sum(1)
    else:
        labels = (np.arange(n) % k)[:, None].astype(np.uint8)
        rng.shuffle(labels)
        level = labels[:, 0]
    images = np.empty((n, *(size,) * dims, channels), dtype=np.uint8)
    ramp = np.linspace(0, 1, size, dtype=np.float32).reshape(1, *(1,) * (dims - 1), size, 1)  # along the last axis
    chunk = max(1, (1 << 22) // (size ** dims * channels))
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        base = rng.integers(0, 60, size=images[part].shape, dtype=np.uint8)
        shade = ramp * ((level[part].reshape(-1, *(1,) * (dims + 1)) + 1) * 180 / k).astype(np.float32)
        images[part] = np.clip(base + shade, 0, 255).astype(np.uint8)
    return (images[..., 0] if channels == 1 else images), labels


def write_synthetic(folder: Path, flag: str, size: int = 28, seed: int = 0, splits: tuple | None = None,
                    compress: bool = False) -> Path:
    """`<folder>/<flag>[_<size>].npz`; split sizes `splits` or the real ones (medmnist.INFO n_samples)."""
    rng = np.random.default_rng(seed)
    sizes = splits or tuple(medmnist.INFO[flag]["n_samples"][split] for split in SPLITS)
    arrays = {}
    for split, n in zip(SPLITS, sizes):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = synthetic_split(flag, n, size, rng)
    path = npz_path(flag, size, Path(folder))
    (np.savez_compressed if compress else np.savez)(path, **arrays)  # np.load reads both
    return path
