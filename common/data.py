"""One MedMNIST LightningDataModule for every stage.

The npz file is obtained through the `medmnist` package (downloaded when missing), its three splits
are loaded once into memory as uint8 tensors, (N, C, H, W) images or (N, 1, D, H, W) volumes for the 3D
flags (organmnist3d, adrenalmnist3d, ...), and batches are sliced from memory:
no per-image Python, no worker processes. Augmentation happens later, batched, on the device
(`on_after_batch_transfer` of the LightningModule).
"""
from __future__ import annotations

import difflib
import os
import zipfile
from pathlib import Path

import medmnist
import numpy as np
import pytorch_lightning as pl
import torch

from utils import UserError

SIZES = (28, 64, 128, 224)  # the sizes MedMNIST+ ships for 2D flags
SIZES_3D = (28, 64)  # and for 3D flags (28^3, 64^3 voxels)
FLAGS_3D = tuple(flag for flag in medmnist.INFO if flag.endswith("3d"))
SPLITS = ("train", "val", "test")
DEFAULT_DATA_DIR = Path(medmnist.info.DEFAULT_ROOT)


def dataset_info(flag: str) -> dict:
    """medmnist.INFO[flag] for a MedMNIST flag (2D or 3D); a UserError naming the closest flag otherwise."""
    if flag in medmnist.INFO:
        return medmnist.INFO[flag]
    close = difflib.get_close_matches(flag, list(medmnist.INFO), n=1)
    hint = f"did you mean {close[0]}?" if close else f"choose one of {', '.join(medmnist.INFO)}"
    raise UserError(f"unknown dataset '{flag}'", hint)


def spatial_dims(flag: str) -> int:
    """2 for image flags, 3 for volume flags (MedMNIST names them <organ>mnist3d)."""
    return 3 if flag in FLAGS_3D else 2


def is_multilabel(info: dict) -> bool:
    return info["task"].startswith("multi-label")  # chestmnist: "multi-label, binary-class"


def npz_path(flag: str, size: int, data_dir: Path) -> Path:
    sizes, what = (SIZES_3D, "3D data sets") if spatial_dims(flag) == 3 else (SIZES, "2D data sets")
    if size not in sizes:
        unit = " voxels per side" if spatial_dims(flag) == 3 else " px"
        raise UserError(f"unsupported size {size} for {flag}", f"{what} come in {', '.join(map(str, sizes))}{unit}")
    return Path(data_dir) / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")


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


def _split_tensors(arrays: dict, split: str, path: Path, info: dict, dims: int):
    images, labels = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
    if images is None or labels is None:
        raise UserError(f"{path} has no {split}_images/{split}_labels", "it is not a MedMNIST npz file")
    channels, n_labels = info["n_channels"], len(info["label"]) if is_multilabel(info) else 1
    grey_ok = images.ndim == 1 + dims and channels == 1  # MedMNIST stores grey images and volumes without a channel axis
    rgb_ok = dims == 2 and images.ndim == 4 and images.shape[-1] == channels == 3
    cube = len(set(images.shape[1:1 + dims])) == 1 if images.ndim > dims else False
    if not (grey_ok or rgb_ok) or not cube or images.dtype != np.uint8:
        expected = "N x D x H x W cubic volumes" if dims == 3 else f"N x H x W{' x 3' if channels == 3 else ''} square images"
        raise UserError(f"{path}: {split}_images has shape {images.shape} {images.dtype}", f"expected uint8 {expected}")
    if labels.shape != (len(images), n_labels):
        raise UserError(
            f"{path}: {split}_labels has shape {labels.shape}", f"expected ({len(images)}, {n_labels})"
        )
    image_tensor = torch.from_numpy(images).unsqueeze(1) if grey_ok else torch.from_numpy(images).permute(0, 3, 1, 2)
    label_tensor = torch.from_numpy(labels.astype(np.float32 if n_labels > 1 else np.int64))
    return image_tensor.contiguous(), label_tensor if n_labels > 1 else label_tensor[:, 0]


EVAL_VOXELS = 1024 * 64 * 64  # pixels (voxels) per batch of a pass without gradients: 1,024 images up to 64 px


def eval_batch(images: torch.Tensor, cap: int) -> int:
    """Images per batch of a pass without gradients (validation, test, features): `cap`, fewer for large images
    (256 at 128 px, 83 at 224 px, 191 volumes at 28^3, 16 at 64^3), so that the network's activations stay within
    a few GB whatever the size."""
    per_image = images[0, 0].numel() if len(images) else 1
    return max(1, min(cap, EVAL_VOXELS // per_image))


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
    """Batches (images, labels) sliced from in-memory tensors; an iterable Lightning accepts as a loader."""

    batch_sampler = None  # Lightning inspects `sampler`/`batch_sampler` as on a DataLoader

    def __init__(self, images, labels, batch_size: int, sampler: EpochShuffler, drop_last: bool = False):
        self.images, self.labels, self.batch_size, self.sampler, self.drop_last = images, labels, batch_size, sampler, drop_last

    def __len__(self) -> int:
        n = self.sampler.count(len(self.images))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order = self.sampler.indices(len(self.images)).to(self.images.device)
        for batch in range(len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            yield self.images[index], self.labels[index]


class MedMNISTDataModule(pl.LightningDataModule):
    """A MedMNIST data set (2D, or 3D volumes) held in memory. Channels, classes, task type and whether it
    holds volumes come from the flag and medmnist.INFO."""

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
    ):
        super().__init__()
        self.info = dataset_info(dataset)
        self.flag, self.size, self.seed = dataset, size, seed
        self.path = npz_path(dataset, size, Path(data_dir).expanduser() if data_dir else DEFAULT_DATA_DIR)
        self.batch_size, self.eval_batch_size, self.drop_last = batch_size, eval_batch_size, drop_last
        self.samples, self.samples_per_class, self.download = samples, samples_per_class, download
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

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
        return spatial_dims(self.flag)

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
    def prepare_data(self) -> None:
        if self.download:
            ensure_downloaded(self.flag, self.size, self.path.parent)

    def load(self) -> "MedMNISTDataModule":
        """Read the npz once (downloading it if needed) and pick the training subset; idempotent."""
        if self.splits:
            return self
        if self.download:
            self.prepare_data()
        if not self.path.is_file():
            raise UserError(f"{self.path} does not exist", "check --data-dir or allow the download")
        splits = load_splits(self.path, self.info, self.dims)
        images, labels = splits["train"]
        keep = select_subset(labels, self.samples, self.samples_per_class, self.seed, self.num_classes)
        splits["train"] = (images[keep], labels[keep])
        self.splits = splits
        return self

    def subset(self, samples: int | None, samples_per_class: int | None, seed: int) -> "MedMNISTDataModule":
        """This data set with only the training images load() would draw for `samples` / `samples_per_class` and
        `seed`, sharing the splits already in memory (the npz is not read again). Call it on the full data set."""
        images, labels = self.load().splits["train"]
        keep = select_subset(labels, samples, samples_per_class, seed, self.num_classes)
        data = MedMNISTDataModule(self.flag, self.size, self.path.parent, self.batch_size, self.eval_batch_size,
                                  samples, samples_per_class, seed, self.drop_last, download=False)
        data.splits = {**self.splits, "train": (images[keep], labels[keep])}
        return data

    def setup(self, stage: str | None = None) -> None:
        self.load()
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if device.type == "cuda":  # the whole dataset fits on the GPU: no host-to-device copies per step
            self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}

    def _loader(self, split: str, batch_size: int, shuffle: bool, drop_last: bool) -> InMemoryLoader:
        images, labels = self.splits[split]
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = EpochShuffler(shuffle, self.seed, rank if shuffle else 0, world if shuffle else 1)
        per_device = sampler.count(len(images))  # --batch-size is per device, as in Lightning
        return InMemoryLoader(images, labels, max(1, min(batch_size, per_device)), sampler, drop_last)

    def train_dataloader(self) -> InMemoryLoader:
        return self._loader("train", self.batch_size, shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self) -> InMemoryLoader:
        return self._loader("val", eval_batch(self.splits["val"][0], self.eval_batch_size), shuffle=False, drop_last=False)

    def test_dataloader(self) -> InMemoryLoader:
        return self._loader("test", eval_batch(self.splits["test"][0], self.eval_batch_size), shuffle=False,
                            drop_last=False)

    def num_train(self) -> int:
        return len(self.splits["train"][0])
