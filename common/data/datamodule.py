"""One MedMNIST LightningDataModule for every stage.

The npz file is obtained through the `medmnist` package (downloaded when missing), its three splits
are loaded once into memory as uint8 tensors, (N, C, H, W) images or (N, 1, D, H, W) volumes for the 3D
flags (organmnist3d, adrenalmnist3d, ...), and batches are sliced from memory:
no per-image Python, no worker processes. Augmentation happens later, batched, on the device
(`on_after_batch_transfer` of the LightningModule).
"""
from __future__ import annotations

import os
import zipfile
from functools import partial
from pathlib import Path

import medmnist
import numpy as np
import pytorch_lightning as pl
import torch

from common.data import prefetch
from common.data.cache import MappedImages, images_nbytes, open_cache
from common.data.registry import dataset_info, is_multilabel, npz_path
from common.data.sources import DataSource, describe, lookup
from common.data.storage import IN_MEMORY_BYTES, STORAGES
from utils import UserError

SPLITS = ("train", "val", "test")
GPU_DATA_SHARE = 0.5  # ours: a set stays on the GPU only if it takes at most half of its free memory

MIRROR_VARIABLE = "MEDSIMCLR_MEDMNIST_MIRROR"  # a base URL serving the npz files, instead of Zenodo


def ensure_downloaded(flag: str, size: int, data_dir: Path) -> Path:
    """Return the npz path, downloading it with medmnist's own (md5-checked) download when missing."""
    path = npz_path(flag, size, data_dir)
    if path.is_file():
        return path
    dataset_cls = getattr(medmnist, dataset_info(flag)["python_class"])
    fetcher = dataset_cls.__new__(dataset_cls)  # only its download(): no arrays loaded twice
    fetcher.size_flag = "" if size == 28 else f"_{size}"
    fetcher.info, fetcher.root = dict(dataset_info(flag)), str(path.parent)
    url_key = f"url{fetcher.size_flag}"
    if os.environ.get(MIRROR_VARIABLE):
        fetcher.info[url_key] = f"{os.environ[MIRROR_VARIABLE].rstrip('/')}/{path.name}"
    created = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fetcher.download()
    except Exception as err:  # medmnist wraps every network/md5 failure in a RuntimeError
        for folder in created:  # leave no empty folders behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise UserError(
            f"{path.name} is not in {path.parent} and could not be downloaded",
            f"download {fetcher.info[url_key]} and put it at {path}, or pass --data-dir",
        ) from err
    return path


def load_splits(path: Path, info: dict, dims: int = 2) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Read all three splits once: images uint8 (N, C, H, W) (volumes, dims 3: (N, 1, D, H, W)), labels int64
    (N,) or float (N, L)."""
    try:
        with np.load(path) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise UserError(f"{path} is not a readable npz file ({err})", "delete it and download it again")
    return {split: _split_tensors(arrays, split, path, info, dims) for split in SPLITS}


def check_split(path: Path, info: dict, dims: int, split: str, shape: tuple, dtype, labels: np.ndarray) -> bool:
    """Refuse a split whose images (`shape`, `dtype`) or `labels` are not MedMNIST's for this flag; returns whether
    the images are RGB (stored channel-last: N x H x W x 3)."""
    channels, n_labels = info["n_channels"], len(info["label"]) if is_multilabel(info) else 1
    ndim = len(shape)
    grey_ok = ndim == 1 + dims and channels == 1  # MedMNIST stores grey images and volumes without a channel axis
    rgb_ok = dims == 2 and ndim == 4 and shape[-1] == channels == 3
    cube = len(set(shape[1:1 + dims])) == 1 if ndim > dims else False
    if not (grey_ok or rgb_ok) or not cube or np.dtype(dtype) != np.uint8:
        expected = "N x D x H x W cubic volumes" if dims == 3 else f"N x H x W{' x 3' if channels == 3 else ''} square images"
        raise UserError(f"{path}: {split}_images has shape {tuple(shape)} {np.dtype(dtype)}", f"expected uint8 {expected}")
    if labels.shape != (shape[0], n_labels):
        raise UserError(f"{path}: {split}_labels has shape {labels.shape}", f"expected ({shape[0]}, {n_labels})")
    check_label_values(path, info, split, labels)
    return not grey_ok


def check_label_values(path: Path, info: dict, split: str, labels: np.ndarray) -> None:
    """Integer labels within the data set's classes (0/1 for multi-label); unlabelled data: anything (never read)."""
    if not info["label"] or len(labels) == 0:
        return
    if not np.issubdtype(labels.dtype, np.integer) and not np.array_equal(labels, np.round(labels)):
        raise UserError(f"{path}: {split}_labels are not whole numbers ({labels.dtype})", "labels are class indices")
    multilabel, count = is_multilabel(info), len(info["label"])
    allowed = 2 if multilabel else count
    bad = np.flatnonzero(((labels < 0) | (labels >= allowed)).any(axis=1))
    if len(bad):
        what, has = ("0 or 1", f"{count} binary labels") if multilabel else (f"a class 0-{count - 1}", f"{count} classes")
        raise UserError(f"{path}: {split}_labels[{bad[0]}] is {labels[bad[0]].tolist()}, not {what} ({len(bad)} such "
                        f"rows)", f"the data set has {has}: fix the labels")


def folder_splits(folder: Path, info: dict, mapped: bool) -> tuple[dict, dict]:
    """(splits, mapped images) of a folder's cache (common/data/scans/cache.py): channel-first uint8 already, read into
    memory or memory-mapped."""
    splits, maps = {}, {}
    for split in SPLITS:
        labels = label_tensor(np.load(folder / f"{split}_labels.npy"), info)
        if mapped:
            maps[split] = MappedImages(folder / f"{split}_images.npy")
            splits[split] = (maps[split].tensor, labels)
        else:
            splits[split] = (torch.from_numpy(np.load(folder / f"{split}_images.npy")), labels)
    return splits, maps


def label_tensor(labels: np.ndarray, info: dict) -> torch.Tensor:
    """int64 (N,) class indices, or float (N, L) for multi-label data sets."""
    if is_multilabel(info):
        return torch.from_numpy(labels.astype(np.float32))
    return torch.from_numpy(labels.astype(np.int64))[:, 0]


def _split_tensors(arrays: dict, split: str, path: Path, info: dict, dims: int):
    images, labels = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
    if images is None or labels is None:
        raise UserError(f"{path} has no {split}_images/{split}_labels", "it is not a MedMNIST npz file")
    rgb = check_split(path, info, dims, split, images.shape, images.dtype, labels)
    image_tensor = torch.from_numpy(images).permute(0, 3, 1, 2) if rgb else torch.from_numpy(images).unsqueeze(1)
    return image_tensor.contiguous(), label_tensor(labels, info)


EVAL_VOXELS = 1024 * 64 * 64  # pixels (voxels) per batch of a pass without gradients: 1,024 images up to 64 px


def eval_batch(images: torch.Tensor, cap: int) -> int:
    """Images per batch of a pass without gradients (validation, test, features): `cap`, fewer for large images
    (256 at 128 px, 83 at 224 px, 191 volumes at 28^3, 16 at 64^3), so that the network's activations stay within
    a few GB whatever the size."""
    per_image = images[0, 0].numel() if len(images) else 1
    return max(1, min(cap, EVAL_VOXELS // per_image))


def fits_on_device(nbytes: int, free: int) -> bool:
    """Whether a data set of `nbytes` may live on a GPU with `free` bytes free, leaving room for the model."""
    return nbytes <= GPU_DATA_SHARE * free


def to_device(images: torch.Tensor, device: torch.device, mapped=None) -> torch.Tensor:
    """`images` copied to `device`; from a memory mapping (common.data.cache.MappedImages) piece by piece, releasing the
    pages read after each piece, so that the copy never holds the whole set in this process's memory."""
    if mapped is None:
        return images.to(device)
    out = torch.empty(images.shape, dtype=images.dtype, device=device)
    step = max(1, (256 << 20) // max(1, images[0].numel() if len(images) else 1))  # 256 MB at a time
    for start in range(0, len(images), step):
        out[start:start + step].copy_(images[start:start + step])
        mapped.release()
    return out


def select_subset(labels: torch.Tensor, samples: int | None, per_class: int | None, seed: int,
                  num_classes: int = 0) -> torch.Tensor:
    """Indices of `samples` random training images, or `per_class` random images of every class."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    if samples is not None:
        if not 0 < samples <= len(labels):
            raise UserError(f"--samples {samples} is not between 1 and the {len(labels)} training images",
                            f"use --samples {len(labels)} or less")
        return order[:samples].sort().values
    if per_class is None:
        return torch.arange(len(labels))
    if labels.ndim > 1:
        raise UserError("--samples-per-class needs single-label data", "use --samples for multi-label datasets")
    counts = torch.bincount(labels, minlength=num_classes)
    smallest = int(counts.argmin())
    if per_class <= 0 or per_class > counts[smallest]:
        raise UserError(
            f"--samples-per-class {per_class} must be between 1 and {int(counts[smallest])}",
            f"class {smallest} has only {int(counts[smallest])} training images",
        )
    shuffled = labels[order]
    picked = [order[shuffled == c][:per_class] for c in range(len(counts))]
    return torch.cat(picked).sort().values


class EpochShuffler:
    """The batch order of one epoch: a permutation seeded by (seed, epoch), sharded across ranks.

    Lightning calls `set_epoch` on a loader's `sampler` at each epoch start, so a resumed run sees
    the same order an uninterrupted one would.
    """

    def __init__(self, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1):
        self.shuffle, self.seed, self.rank, self.world_size, self.epoch = shuffle, seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def count(self, n: int) -> int:
        """How many of n items this rank sees per epoch (len of `indices(n)`, without permuting)."""
        return n // self.world_size

    def indices(self, n: int) -> torch.Tensor:
        if not self.shuffle:
            order = torch.arange(n)
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        order = order[: len(order) - len(order) % self.world_size]  # equal shards: no rank waits for another
        return order[self.rank :: self.world_size]


class InMemoryLoader:
    """Batches (images, labels) sliced from tensors held in memory, or read from a memory-mapped cache; an iterable
    Lightning accepts as a loader.

    With `prefetch`, batches are gathered one ahead on a background thread (common.data.prefetch) and, given a CUDA
    `device`, copied there from pinned memory without blocking; `mapped` (common.data.cache.MappedImages of `images`)
    reads each batch's images from the cache's file."""

    batch_sampler = None  # Lightning inspects `sampler`/`batch_sampler` as on a DataLoader

    def __init__(self, images, labels, batch_size: int, sampler: EpochShuffler, drop_last: bool = False,
                 prefetch: bool = False, device: torch.device | None = None, mapped=None):
        self.images, self.labels, self.batch_size, self.sampler, self.drop_last = images, labels, batch_size, sampler, drop_last
        self.prefetch, self.device, self.mapped = prefetch, device, mapped

    def __len__(self) -> int:
        n = self.sampler.count(len(self.images))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batch_indices(self):
        order = self.sampler.indices(len(self.images)).to(self.images.device)
        return (order[batch * self.batch_size : (batch + 1) * self.batch_size] for batch in range(len(self)))

    def __iter__(self):
        if not self.prefetch:
            for index in self.batch_indices():
                yield self.images[index], self.labels[index]
            return
        pin = self.device is not None and self.device.type == "cuda"
        take = self.mapped.take if self.mapped is not None else None
        host = (prefetch.gather(self.images, self.labels, index, pin, take) for index in self.batch_indices())
        yield from prefetch.ahead(host, self.device)


class MedMNISTDataModule(pl.LightningDataModule):
    """A MedMNIST data set (2D, or 3D volumes), an npz file in its layout or a folder's cache (common.data.sources), held
    in memory or memory-mapped. Channels, classes, task type and whether it holds volumes come from the flag and
    medmnist.INFO, or from the file or folder."""

    def __init__(
        self,
        dataset: str = "bloodmnist",
        size: int = 28,
        data_dir: str | Path | None = None,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        samples: int | None = None,
        samples_per_class: int | None = None,
        seed: int = 0,
        drop_last: bool = False,
        download: bool = True,
        storage: str = "auto",
    ):
        super().__init__()
        if storage not in STORAGES:
            raise ValueError(f"unknown storage {storage!r}; choose one of {', '.join(STORAGES)}")
        self.source: DataSource = lookup(dataset, size, data_dir)
        self.info, self.dataset = self.source.info, dataset
        self.flag, self.size, self.seed = self.source.name, self.source.size, seed  # flag: the name runs are named by
        self.path = self.source.path
        self.batch_size, self.eval_batch_size, self.drop_last = batch_size, eval_batch_size, drop_last
        self.samples, self.samples_per_class, self.download = samples, samples_per_class, download
        self.storage = storage
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.mapped: dict = {}  # split -> common.data.cache.MappedImages, with the memory-mapped storage
        self.transfer_device: torch.device | None = None  # where batches are copied to, when the data stay on the host
        self.pooled: tuple[torch.Tensor, torch.Tensor] | None = None  # pretraining's images with --extra-unlabelled
        self.monitor: MedMNISTDataModule | None = None  # --monitor-dataset: its splits serve pretraining's kNN monitor

    # -- metadata ---------------------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.info["task"]

    @property
    def multilabel(self) -> bool:
        return is_multilabel(self.info)

    @property
    def dims(self) -> int:
        """Spatial dimensions of the images: 2, or 3 for volumes (N, 1, D, H, W)."""
        return self.source.dims

    @property
    def num_channels(self) -> int:
        return self.info["n_channels"]

    @property
    def num_classes(self) -> int:
        return len(self.info["label"])

    @property
    def class_names(self) -> list[str]:
        return [self.info["label"][str(i)] for i in range(self.num_classes)]

    # -- Lightning hooks --------------------------------------------------------------------
    def about(self) -> dict:
        """What a run's record says of its data: the file whose md5 it takes (a folder's manifest) and the source."""
        data_file = self.path / "manifest.json" if self.source.kind == "folder" else self.path
        return {"data_file": str(data_file), "data": self.source.record()}

    @property
    def unlabelled(self) -> bool:
        return self.source.unlabelled

    def require_labels(self, what: str) -> None:
        """A UserError for a data set without labels: `what` (the probe, finetuning, ...) needs them."""
        if self.unlabelled:
            raise UserError(f"{what} needs labels, and {describe(self.source)} has none",
                            "give --labels labels.csv or class subfolders (README 'Your own data')")

    def prepare_data(self) -> None:
        if self.download and self.source.kind == "medmnist":
            ensure_downloaded(self.flag, self.size, self.path.parent)

    def load(self) -> "MedMNISTDataModule":
        """Read the npz once (downloading it if needed) and pick the training subset; idempotent."""
        if self.splits:
            return self
        if self.download:
            self.prepare_data()
        if self.source.kind == "folder":
            splits, self.mapped = folder_splits(self.path, self.info, self.resolved_storage() == "mmap")
        elif not self.path.is_file():
            raise UserError(f"{self.path} does not exist", "check --data-dir or allow the download")
        elif self.resolved_storage() == "memory":
            splits = load_splits(self.path, self.info, self.dims)
        else:
            cache = open_cache(self.path, SPLITS, partial(check_split, self.path, self.info, self.dims))
            self.mapped = {split: images for split, (images, _) in cache.items()}
            splits = {split: (images.tensor, label_tensor(labels, self.info)) for split, (images, labels) in cache.items()}
        images, labels = splits["train"]
        keep = select_subset(labels, self.samples, self.samples_per_class, self.seed, self.num_classes)
        if len(keep) < len(labels):  # all of them: no copy
            splits["train"] = (images[keep], labels[keep])
            self.mapped.pop("train", None)  # the subset is in memory
        self.splits = splits
        return self

    def resolved_storage(self) -> str:
        """--data-storage: memory, mmap, or (auto) mmap for images over IN_MEMORY_BYTES uncompressed."""
        if self.storage != "auto":
            return self.storage
        if self.source.kind == "folder":
            nbytes = sum((self.path / f"{split}_images.npy").stat().st_size for split in SPLITS)
            return "mmap" if nbytes > IN_MEMORY_BYTES else "memory"
        try:
            return "mmap" if images_nbytes(self.path) > IN_MEMORY_BYTES else "memory"
        except (OSError, zipfile.BadZipFile):
            return "memory"  # load_splits says what is wrong with the file

    def subset(self, samples: int | None, samples_per_class: int | None, seed: int) -> "MedMNISTDataModule":
        """This data set with only the training images load() would draw for `samples` / `samples_per_class` and
        `seed`, sharing the splits already in memory (the npz is not read again). Call it on the full data set."""
        images, labels = self.load().splits["train"]
        keep = select_subset(labels, samples, samples_per_class, seed, self.num_classes)
        data_dir = self.path.parent if self.source.kind == "medmnist" else None
        data = MedMNISTDataModule(self.dataset, self.size, data_dir, self.batch_size, self.eval_batch_size,
                                  samples, samples_per_class, seed, self.drop_last, download=False, storage=self.storage)
        data.splits, data.mapped = dict(self.splits), dict(self.mapped)
        if len(keep) < len(labels):  # the subset goes to memory
            data.splits["train"] = (images[keep], labels[keep])
            data.mapped.pop("train", None)
        return data

    def setup(self, stage: str | None = None) -> None:
        self.load()
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if device.type != "cuda" or self.transfer_device is not None:
            return
        nbytes = sum(x.numel() * x.element_size() + y.numel() * y.element_size() for x, y in self.splits.values())
        free, _ = torch.cuda.mem_get_info(device)
        if fits_on_device(nbytes, free):  # no host-to-device copies per step
            self.splits = {k: (to_device(x, device, self.mapped.get(k)), y.to(device)) for k, (x, y) in self.splits.items()}
            self.mapped = {}
        else:
            self.transfer_device = device
            if self.trainer.global_rank == 0:
                print(f"note: the data set ({nbytes / 2**30:.1f} GiB) stays in host memory: more than "
                      f"{GPU_DATA_SHARE:.0%} of the GPU's {free / 2**30:.1f} GiB free; batches are copied from "
                      "pinned memory, one ahead")

    def _loader(self, split: str, batch_size: int, shuffle: bool, drop_last: bool) -> InMemoryLoader:
        images, labels = self.pooled if split == "train" and self.pooled is not None else self.splits[split]
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = EpochShuffler(shuffle, self.seed, rank if shuffle else 0, world if shuffle else 1)
        per_device = sampler.count(len(images))  # --batch-size is per device, as in Lightning
        mapped = self.mapped.get(split)
        prefetched = mapped is not None or self.transfer_device is not None
        return InMemoryLoader(images, labels, max(1, min(batch_size, per_device)), sampler, drop_last,
                              prefetch=prefetched, device=self.transfer_device, mapped=mapped)

    def pool(self, extras: list[torch.Tensor]) -> None:
        """Pretraining's training images: this set's and `extras` (other sources' training images, uint8 of this
        set's shape), shuffled together; every other use of the training split (the kNN monitor's bank) keeps this
        set's own."""
        images, labels = self.load().splits["train"]
        extra = torch.cat(extras)
        blank = torch.zeros((len(extra), *labels.shape[1:]), dtype=labels.dtype)  # unlabelled: never read
        self.pooled = torch.cat([images, extra]), torch.cat([labels, blank])
        self.mapped.pop("train", None)

    def train_dataloader(self) -> InMemoryLoader:
        loader = self._loader("train", self.batch_size, shuffle=True, drop_last=self.drop_last)
        n, sampler = self.num_train(), loader.sampler
        if n % sampler.world_size and sampler.rank == 0:
            print(f"note: {n % sampler.world_size} of the {n} training images sit out each epoch (different ones every "
                  f"epoch) so that the {sampler.world_size} devices take equal shares")
        return loader

    def val_dataloader(self) -> InMemoryLoader:
        return self._loader("val", eval_batch(self.splits["val"][0], self.eval_batch_size), shuffle=False, drop_last=False)

    def test_dataloader(self) -> InMemoryLoader:
        return self._loader("test", eval_batch(self.splits["test"][0], self.eval_batch_size), shuffle=False,
                            drop_last=False)

    def num_train(self) -> int:
        """Training images per epoch (pooled ones included)."""
        return len((self.pooled or self.splits["train"])[0])
