"""What `--dataset` names, without torch: a MedMNIST flag, an npz file in MedMNIST's layout anywhere on disk, or a
folder of the user's own scans (common/data/scans/: decoded once into a cache).

Every command resolves its --dataset once, when its options are checked (common.cli.parsers), and the resolved source is
remembered for the process: the data module, the recipes and the augmentation checks look it up by the text given.
A source has what medmnist.INFO has for a flag (`info`: task, channels, class names), whether it holds volumes,
a short `name` for run names (the flag, the npz's stem, the folder's name) and the file or cache folder to read.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.data.registry import (DEFAULT_DATA_DIR, FLAGS_3D, INFO, SIZES, SIZES_3D, dataset_info, is_multilabel,
                                  npz_path)
from utils import UserError

KINDS = ("medmnist", "npz", "folder")


@dataclass(frozen=True)
class DataSource:
    text: str  # --dataset as given
    kind: str  # one of KINDS
    name: str  # for run names and titles
    info: dict = field(compare=False)  # as medmnist.INFO[flag]
    dims: int  # 2: images, 3: volumes
    path: Path  # the npz file (medmnist, npz) or the cache folder (folder)
    size: int
    digest: str | None = None  # a folder's manifest md5 (an npz's md5 is taken by the run's record)
    options: dict = field(default_factory=dict, compare=False)  # a folder's: labels, fit, window

    @property
    def unlabelled(self) -> bool:
        return not self.info["label"]

    def record(self) -> dict:
        """What a run's config records of its data: kind, the text given, the file or folder, digest, options."""
        return {"kind": self.kind, "dataset": self.text, "name": self.name, "path": str(self.path),
                "digest": self.digest, **({"options": self.options} if self.options else {}),
                **({"split_rule": self.info.get("split_rule"), "labelled_by": self.info.get("labelled_by")}
                   if self.kind == "folder" else {})}

    def values(self) -> dict:
        """The options that name this source again, as values (dest -> value; for the stages one command runs):
        common.cli.options' DataOptions fields dataset, size, data_dir, labels_from, fit and window, where set."""
        values = {"dataset": self.text, "size": self.size}
        if self.kind == "medmnist":
            values["data_dir"] = str(self.path.parent)
        for option in ("labels", "fit", "window"):
            if self.options.get(option) is not None:
                values["labels_from" if option == "labels" else option] = self.options[option]
        return values


_RESOLVED: dict[str, DataSource] = {}  # --dataset text -> its source, as last resolved in this process


def is_flag(text: str) -> bool:
    return text in INFO


def looks_like_path(text: str) -> bool:
    return not is_flag(text) and ("/" in text or text.endswith(".npz") or Path(text).expanduser().exists())


def check_text(text: str) -> str:
    """--dataset as parsed: a flag (else the closest one named), or an existing folder or .npz file."""
    if is_flag(text):
        return text
    if not looks_like_path(text):
        dataset_info(text)  # the unknown-flag error, with the closest flag
    path = Path(text).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix == ".npz"):
        return text
    if path.exists():
        raise UserError(f"--dataset {text} is neither a MedMNIST flag, a folder nor an .npz file")
    raise UserError(f"--dataset {text}: no such file or folder", "give a MedMNIST flag, a folder of scans or an npz")


def resolve(text: str, size: int, data_dir: str | Path | None = None, labels: str | None = None,
            fit: str = "pad", window: str | None = None) -> DataSource:
    """The source `text` names at `size` (a folder is cached, decoding it if needed), remembered for the process.
    `labels`, `fit`, `window` (LOW,HIGH): a folder's options (common/data/scans/)."""
    if is_flag(text):
        dims = 3 if text in FLAGS_3D else 2
        source = DataSource(text, "medmnist", text, INFO[text], dims,
                            npz_path(text, size, Path(data_dir).expanduser() if data_dir else DEFAULT_DATA_DIR), size)
    else:
        check_text(text)
        path = Path(text).expanduser().resolve()
        source = npz_source(text, path) if path.is_file() else folder_source(text, path, size, labels, fit, window)
    if source.kind != "medmnist":
        _RESOLVED[text] = source
    return source


def lookup(text: str, size: int, data_dir: str | Path | None = None) -> DataSource:
    """The source this process resolved for `text` (with its options), or `text` resolved with default options."""
    known = None if is_flag(text) else _RESOLVED.get(text)  # a flag's source is only its npz's path: built again
    if known is not None and (known.size == size or known.kind == "npz"):
        return known
    return resolve(text, size, data_dir)


def short_name(text: str) -> str:
    """The name runs of `text` are named by (pretrain-<name>): the flag, or a resolved file's or folder's name."""
    return _RESOLVED[text].name if text in _RESOLVED else text


def known_info(text: str) -> dict:
    """INFO of a flag, or of a source resolved in this process."""
    if is_flag(text) or text not in _RESOLVED:
        return dataset_info(text)
    return _RESOLVED[text].info


def known_dims(text: str) -> int:
    if text in _RESOLVED:
        return _RESOLVED[text].dims
    return 3 if text in FLAGS_3D else 2


def check_folder_size(path: Path, size: int) -> None:
    """A UserError unless a folder of images (volumes) may be cached at `size`; read from the files' suffixes, before
    anything is decoded (an empty folder's error first)."""
    from common.data.scans.layout import read_layout

    dims = read_layout(path, "none").dims  # the labels are read once, when it is cached
    sizes, unit = (SIZES_3D, " voxels per side") if dims == 3 else (SIZES, " px")
    if size not in sizes:
        raise UserError(f"unsupported size {size} for {path.name}",
                        f"{'volumes' if dims == 3 else 'images'} are cached at {', '.join(map(str, sizes))}{unit}")


def npz_source(text: str, path: Path) -> DataSource:
    """An npz in MedMNIST's layout: a flag's own INFO when its name is `<flag>[_<size>].npz`, else inferred from the
    arrays (channels from the images' shape, classes from the labels)."""
    from common.data.npy_stream import member_shape

    try:
        with zipfile.ZipFile(path) as archive:
            shapes = {s: member_shape(archive, f"{s}_images.npy")[0] for s in ("train", "val", "test")}
            labels = {s: np.load(archive.open(f"{s}_labels.npy")) for s in ("train", "val", "test")}
    except KeyError as err:
        raise UserError(f"{path} is not in MedMNIST's layout (no {err.args[0]})",
                        "it needs train/val/test _images and _labels arrays") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise UserError(f"{path} is not a readable npz file ({err})") from None
    train = shapes["train"]
    flag = path.stem.rsplit("_", 1)[0] if path.stem.rsplit("_", 1)[-1].isdigit() else path.stem
    if is_flag(flag):
        info, dims = INFO[flag], 3 if flag in FLAGS_3D else 2
    else:
        dims = 3 if len(train) == 4 and train[-1] != 3 else 2
        info = inferred_info(path, labels, 3 if dims == 2 and len(train) == 4 else 1)
    size = int(train[1])
    return DataSource(text, "npz", path.stem, info, dims, path, size)


def inferred_info(path: Path, labels: dict, channels: int) -> dict:
    every = np.concatenate([np.asarray(v).reshape(len(v), -1) for v in labels.values()])
    if every.shape[1] > 1:
        task, names = "multi-label, binary-class", {str(i): f"label {i}" for i in range(every.shape[1])}
    else:
        count = int(every.max()) + 1 if every.size else 0
        task = "binary-class" if count == 2 else "multi-class"
        names = {str(i): str(i) for i in range(count)}
    return {"python_class": None, "description": f"npz file {path}", "task": task, "label": names,
            "n_channels": channels, "n_samples": {s: len(v) for s, v in labels.items()}}


def folder_source(text: str, path: Path, size: int, labels: str | None, fit: str, window: str | None) -> DataSource:
    from common.data.scans.cache import FolderOptions, open_folder

    if labels not in (None, "folders", "none"):
        labels = str(Path(labels).expanduser().resolve())
    low_high = tuple(float(v) for v in window.split(",")) if window else None
    options = FolderOptions(size, fit, low_high, labels)
    check_folder_size(path, size)
    folder, info, digest = open_folder(path, options)
    return DataSource(text, "folder", path.name, info, info["dims"], folder, size, digest,
                      {"labels": labels, "fit": fit, "window": window})


def describe(source: DataSource) -> str:
    """One line for messages: what the data set is."""
    if source.kind == "medmnist":
        return source.name
    multilabel = is_multilabel(source.info) if source.info["label"] else False
    classes = f"{len(source.info['label'])} {'labels' if multilabel else 'classes'}" if source.info["label"] else "unlabelled"
    return f"{source.name} ({source.kind} {source.text}: {classes})"
