"""A data set larger than memory: its npz decoded once into an uncompressed, memory-mapped cache beside it.

    <data dir>/pathmnist_224.npz          MedMNIST's file (compressed)
    <data dir>/pathmnist_224.cache/       train_images.npy ... test_labels.npy, manifest.json

The images are stored channel-first, (N, C, H, W) or (N, 1, D, H, W), so an image is one contiguous run of bytes:
a batch is one read per image into the batch's buffer, with no conversion. Only the images a batch needs are read;
the kernel's page cache keeps them for the next epoch, shared by every process of a multi-GPU run on the machine.

The manifest records the npz's size and modification time: a changed npz is decoded again. The cache is built in
a temporary folder and renamed into place, so an interrupted build leaves no cache that looks complete, under a
lock file beside it (`<flag>.cache.lock`), so that the processes of a multi-device run build it once.
"""
from __future__ import annotations

import json
import mmap
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from common.data.file_lock import exclusive_lock
from common.data.npy_stream import member_shape, read_chunks, write_npy
from utils import UserError

CACHE_VERSION = 1
MANIFEST = "manifest.json"


def cache_folder(npz: Path) -> Path:
    return npz.with_suffix(".cache")


def images_nbytes(npz: Path) -> int:
    """Uncompressed bytes of the images of every split, from the zip's directory (nothing is decompressed)."""
    with zipfile.ZipFile(npz) as archive:
        return sum(member.file_size for member in archive.infolist() if member.filename.endswith("_images.npy"))


def source_stamp(npz: Path) -> dict:
    stat = npz.stat()
    return {"source": npz.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "version": CACHE_VERSION}


def is_current(npz: Path) -> bool:
    manifest = cache_folder(npz) / MANIFEST
    try:
        return json.loads(manifest.read_text())["stamp"] == source_stamp(npz)
    except (OSError, ValueError, KeyError):
        return False


def channel_first(chunk: np.ndarray, rgb: bool) -> np.ndarray:
    """(k, H, W) grey, (k, H, W, 3) RGB or (k, D, H, W) volumes -> (k, C, ...)."""
    return np.moveaxis(chunk, -1, 1) if rgb else chunk[:, None]


def channel_first_chunks(archive: zipfile.ZipFile, name: str, rgb: bool, progress):
    """The member's images piece by piece, channel-first, counted on the `progress` bar."""
    for chunk in read_chunks(archive, name):
        progress.update(len(chunk))
        yield channel_first(chunk, rgb)


def build_cache(npz: Path, splits: tuple[str, ...], check) -> Path:
    """Decode every split of `npz` into its cache folder, piece by piece. `check(split, shape, dtype, labels)`
    validates a split before it is written and returns whether its images are RGB (channel-last in the npz)."""
    final = cache_folder(npz)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir()
    except OSError as err:
        raise UserError(f"cannot create the data cache {partial} ({err.strerror})",
                        "make the data folder writable, or pass --data-storage memory") from None
    try:
        with zipfile.ZipFile(npz) as archive:
            for split in splits:
                labels = np.load(archive.open(f"{split}_labels.npy"))
                shape, dtype, _ = member_shape(archive, f"{split}_images.npy")
                rgb = check(split, shape, dtype, labels)
                np.save(partial / f"{split}_labels.npy", labels)
                target_shape = (shape[0], shape[-1], *shape[1:-1]) if rgb else (shape[0], 1, *shape[1:])
                # plain writes, not a writable mapping: its dirty pages would count as this process's memory
                with open(partial / f"{split}_images.npy", "wb") as target, tqdm(
                        total=shape[0], desc=f"decoding {npz.name} {split} into {final.name}", unit="image",
                        leave=False) as progress:
                    write_npy(target, f"{split}_images", target_shape, np.uint8,
                              channel_first_chunks(archive, f"{split}_images.npy", rgb, progress))
        (partial / MANIFEST).write_text(json.dumps({"stamp": source_stamp(npz), "splits": list(splits)}, indent=2))
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError) as err:
        shutil.rmtree(partial, ignore_errors=True)
        raise UserError(f"{npz} is not a readable npz file ({err})", "delete it and download it again") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)  # a stale cache of an older npz
    partial.rename(final)
    return final


def build_lock(npz: Path):
    """An exclusive lock on `<npz stem>.cache.lock` beside the npz."""
    path = cache_folder(npz).with_name(cache_folder(npz).name + ".lock")
    return exclusive_lock(path, "make the data folder writable, or pass --data-storage memory")


class MappedImages:
    """The images of one split in the cache. `tensor` is a torch view of the file's memory mapping (N, C, ...) that
    consumers of whole ranges slice like an in-memory tensor (features, the kNN monitor). Batches of scattered
    images are read with `take` instead: one positioned read per image straight into the batch's buffer, through
    the page cache but without mapping pages into this process (a mapping faults in its neighbours too, and the
    process's resident memory would grow by several times what it reads). `release()` drops the mapped pages a
    pass over `tensor` brought in (the page cache keeps them, so reading them again costs no disk access)."""

    def __init__(self, path: Path):
        self.array = np.load(path, mmap_mode="c")  # copy-on-write: writable for torch, never written back
        self.tensor = torch.from_numpy(self.array)
        self.path, self.offset = path, self.array.offset
        self.image_bytes = int(np.prod(self.array.shape[1:], dtype=np.int64))
        self.fd = os.open(path, os.O_RDONLY) if hasattr(os, "preadv") else None

    def take(self, index: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Images `index` into `out` (a contiguous host tensor (len(index), C, ...)), and return it."""
        if self.fd is None:  # no positioned reads on this system: copy from the mapping
            return torch.index_select(self.tensor, 0, index, out=out)
        rows = out.numpy().reshape(len(index), -1)
        for row, i in zip(rows, index.tolist()):
            if os.preadv(self.fd, [row], self.offset + i * self.image_bytes) != self.image_bytes:
                raise OSError(f"{self.path} ended before image {i}: rebuild the cache (delete its folder)")
        return out

    def release(self) -> None:
        mapping = getattr(self.array, "_mmap", None)
        if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
            mapping.madvise(mmap.MADV_DONTNEED)

    def __del__(self):
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)


def open_cache(npz: Path, splits: tuple[str, ...], check) -> dict[str, tuple[MappedImages, torch.Tensor]]:
    """split -> (mapped images, labels as read from the npz), building the cache first when it is missing or
    older than the npz."""
    if not is_current(npz):
        with build_lock(npz):  # the processes of a multi-device run start together: one builds, the others wait
            if not is_current(npz):
                build_cache(npz, splits, check)
    folder = cache_folder(npz)
    return {split: (MappedImages(folder / f"{split}_images.npy"), np.load(folder / f"{split}_labels.npy"))
            for split in splits}
