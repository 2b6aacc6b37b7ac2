"""Synthetic datasets in MedMNIST's own npz format (keys, dtypes, shapes), with learnable class patterns:
for the benchmark where a real file is missing, and for the tests."""
from __future__ import annotations

import zipfile
from pathlib import Path

import medmnist
import numpy as np

from common.data.datamodule import SPLITS
from common.data.registry import is_multilabel, npz_path, spatial_dims
from common.data.npy_stream import write_member


def synthetic_split(flag: str, n: int, size: int, rng: np.random.Generator):
    """(labels, image chunks) of n images (volumes for a 3D flag) of `flag`'s shape and classes; each image is noise
    plus a horizontal ramp whose strength depends on its label. The images come as consecutive chunks of about
    4 MB, made as they are read: a split of any size is written without holding it in memory."""
    info, dims = medmnist.INFO[flag], spatial_dims(flag)
    k, channels = len(info["label"]), info["n_channels"]
    if is_multilabel(info):
        labels = (rng.random((n, k)) < 0.3).astype(np.uint8)
        level = labels[:, : min(k, 4)].sum(1)
    else:
        labels = (np.arange(n) % k)[:, None].astype(np.uint8)
        rng.shuffle(labels)
        level = labels[:, 0]
    shape = (*(size,) * dims, channels)
    ramp = np.linspace(0, 1, size, dtype=np.float32).reshape(1, *(1,) * (dims - 1), size, 1)  # along the last axis
    chunk = max(1, (1 << 22) // (size ** dims * channels))

    def chunks():
        for start in range(0, n, chunk):
            part = slice(start, min(n, start + chunk))
            base = rng.integers(0, 60, size=(part.stop - start, *shape), dtype=np.uint8)
            shade = ramp * ((level[part].reshape(-1, *(1,) * (dims + 1)) + 1) * 180 / k).astype(np.float32)
            images = np.clip(base + shade, 0, 255).astype(np.uint8)
            yield images[..., 0] if channels == 1 else images

    return labels, chunks()


def write_synthetic(folder: Path, flag: str, size: int = 28, seed: int = 0, splits: tuple | None = None,
                    compress: bool = False) -> Path:
    """`<folder>/<flag>[_<size>].npz`; split sizes `splits` or the real ones (medmnist.INFO n_samples). Written
    chunk by chunk (np.savez's format, deflated like np.savez_compressed with `compress`)."""
    rng = np.random.default_rng(seed)
    sizes = splits or tuple(medmnist.INFO[flag]["n_samples"][split] for split in SPLITS)
    channels, dims = medmnist.INFO[flag]["n_channels"], spatial_dims(flag)
    path = npz_path(flag, size, Path(folder))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as npz:
        for split, n in zip(SPLITS, sizes):
            labels, chunks = synthetic_split(flag, n, size, rng)
            shape = (n, *(size,) * dims, *((channels,) if channels > 1 else ()))
            write_member(npz, f"{split}_images.npy", shape, np.uint8, chunks)
            write_member(npz, f"{split}_labels.npy", labels.shape, np.uint8, iter([labels]))
    return path
