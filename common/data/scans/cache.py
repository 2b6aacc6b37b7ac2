"""A folder of scans decoded once, in parallel, into the uint8 cache the framework reads large sets from.

    <output root>/data_cache/<folder name>-<hash of its path>/<size>px-<fit>[-window]-<labels>/
        train_images.npy ... test_labels.npy   channel-first uint8 (N, C, H, W) or (N, 1, D, H, W); MedMNIST's labels
        info.json                              task, channels, class names, counts: what medmnist.INFO says of a flag
        manifest.json                          every file's relative path, size and modification time, the labels
                                               file's, the options; its md5 is the data set's digest

A run whose folder, labels file and options match the manifest reads the cache without decoding anything; any
change (a file added, removed, rewritten) rebuilds it. The build goes to a `.partial` folder renamed into place under
a lock, as common/data/cache.py's, and the folder is listed again after decoding: a folder that changed meanwhile is an
error and nothing is cached.

Channels: a folder of grey images is grey (1 channel); an RGB file whose three channels are equal counts as grey;
one colour image makes the whole set RGB (grey images repeated into three channels).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from common.data.file_lock import exclusive_lock
from common.data.scans.decode import DecodeError, decode, is_volume, series_slices
from common.data.scans.layout import SPLITS, Layout, read_layout, scan
from utils import UserError, output_root

CACHE_VERSION = 1
CACHE_FOLDER = "data_cache"
MANIFEST, INFO = "manifest.json", "info.json"
CHUNK = 32  # files per task of a decoding worker: few enough tasks to keep the pool's overhead small


@dataclass(frozen=True)
class FolderOptions:
    """What a folder's cache depends on besides its files: --size, --fit, --window, --labels."""

    size: int
    fit: str = "pad"
    window: tuple[float, float] | None = None
    labels: str | None = None

    def tag(self) -> str:
        window = f"-window{self.window[0]:g},{self.window[1]:g}" if self.window else ""
        labels = self.labels if self.labels in (None, "folders", "none") else "csv-" + path_hash(Path(self.labels))
        return f"{self.size}px-{self.fit}{window}-{labels or 'auto'}"


def path_hash(path: Path) -> str:
    return hashlib.md5(str(path.expanduser().resolve()).encode()).hexdigest()[:8]


def cache_folder(root: Path, options: FolderOptions) -> Path:
    return output_root() / CACHE_FOLDER / f"{root.resolve().name}-{path_hash(root)}" / options.tag()


def stamps(root: Path, files: list[str]) -> list[list]:
    """[name, bytes, modification time] of each scan; a DICOM series (a folder): its slices' total bytes, newest
    time and count."""
    out = []
    for name in files:
        path = root / name
        if name.endswith("/"):
            slices = [p.stat() for p in series_slices(path)]  # the files the volume is read from, no others
            out.append([name, sum(s.st_size for s in slices), max((s.st_mtime_ns for s in slices), default=0),
                        len(slices)])
            continue
        stat = path.stat()
        out.append([name, stat.st_size, stat.st_mtime_ns])
    return out


def manifest_record(root: Path, layout: Layout, options: FolderOptions) -> dict:
    labels_file = None
    if layout.labelled_by not in ("folders", "none"):
        stat = Path(layout.labelled_by).stat()
        labels_file = [str(Path(layout.labelled_by).resolve()), stat.st_size, stat.st_mtime_ns]
    return {"version": CACHE_VERSION, "root": str(root.resolve()),
            "options": {"size": options.size, "fit": options.fit, "window": options.window, "labels": options.labels},
            "labels_file": labels_file, "files": stamps(root, sorted(layout.files))}


def digest(manifest: dict) -> str:
    return hashlib.md5(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def current_manifest(root: Path, options: FolderOptions) -> dict | None:
    """The manifest the folder has now, from a listing and the files' stats only (nothing read), or None when
    that is not enough to say (no cache yet)."""
    folder = cache_folder(root, options)
    try:
        saved = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    files, _ = scan(root)
    try:
        now = {**saved, "files": stamps(root, files)}
        if saved.get("labels_file"):
            stat = Path(saved["labels_file"][0]).stat()
            now["labels_file"] = [saved["labels_file"][0], stat.st_size, stat.st_mtime_ns]
    except OSError:
        return None
    return saved if now == saved and saved.get("version") == CACHE_VERSION else None


def open_folder(root: Path, options: FolderOptions) -> tuple[Path, dict, str]:
    """(cache folder, info, digest) of `root`, decoding it first when its cache is missing or out of date. Every
    check (labels, unreadable files, a folder changing) comes before anything is written."""
    root = root.expanduser()
    manifest = current_manifest(root, options)
    folder = cache_folder(root, options)
    if manifest is None:
        decoded = decode_folder(root, options)  # in this process's memory: no file written yet
        folder.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(folder.with_name(folder.name + ".lock"), "set MEDSIMCLR_OUTPUT_ROOT to a writable folder"):
            manifest = current_manifest(root, options)  # another process of a multi-device run may have written it
            if manifest is None:
                manifest = write_cache(root, folder, *decoded)
    return folder, json.loads((folder / INFO).read_text()), digest(manifest)


def decode_chunk(root: Path, names: list[str], options: FolderOptions) -> list:
    """[(array, colour) or (None, reason)] of files `names`: runs in a worker process."""
    out = []
    for name in names:
        try:
            array = decode(root / name, options.size, options.fit, options.window)
        except (DecodeError, OSError) as err:
            out.append((None, str(err)))
            continue
        colour = False
        if array.ndim == 3 and not is_volume(root / name):
            colour = not ((array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all())
            if not colour:  # an RGB file of grey pixels
                array = np.ascontiguousarray(array[..., 0])
        out.append((array, colour))
    return out


def decode_all(root: Path, files: list[str], options: FolderOptions) -> list:
    chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]
    workers = min(os.cpu_count() or 1, len(chunks))
    results = []
    with tqdm(total=len(files), desc=f"decoding {root.name} into the data cache", unit="file") as progress:
        if workers <= 1:
            for chunk in chunks:
                results += decode_chunk(root, chunk, options)
                progress.update(len(chunk))
        else:
            with ProcessPoolExecutor(workers) as pool:
                for chunk, decoded in zip(chunks, pool.map(decode_chunk, [root] * len(chunks), chunks,
                                                           [options] * len(chunks))):
                    results += decoded
                    progress.update(len(chunk))
    return results


def channel_first(arrays: list[np.ndarray], colour: bool, dims: int) -> np.ndarray:
    """(N, C, ...) uint8: grey images repeated into 3 channels where the set is colour."""
    if dims == 3:
        return np.stack(arrays)[:, None]
    if not colour:
        return np.stack(arrays)[:, None]
    return np.stack([np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a for a in arrays]).transpose(0, 3, 1, 2)


def decode_folder(root: Path, options: FolderOptions) -> tuple[Layout, dict, list]:
    """(layout, manifest, [(array, colour)]) of every file of the folder, checked: every file readable, the folder
    unchanged while it was decoded."""
    layout = read_layout(root, options.labels)
    if layout.skipped:
        many = len(layout.skipped) > 1
        print(f"note: {len(layout.skipped)} file{'s' if many else ''} of {root} {'are' if many else 'is'} not an "
              f"image and left out (e.g. {layout.skipped[0]})")
    manifest = manifest_record(root, layout, options)
    decoded = decode_all(root, layout.files, options)
    broken = [(name, reason) for name, (array, reason) in zip(layout.files, decoded) if array is None]
    if broken:
        raise UserError(f"{len(broken)} of {len(layout.files)} files of {root} cannot be read (e.g. {broken[0][0]}: "
                        f"{broken[0][1]})", "fix or remove them: a scan left out silently would change the splits")
    try:
        files_now, _ = scan(root)
        unchanged = sorted(files_now) == sorted(layout.files) and manifest_record(root, layout, options) == manifest
    except OSError:  # a file removed meanwhile
        unchanged = False
    if not unchanged:
        raise UserError(f"{root} changed while it was being cached; nothing was cached",
                        "run again once the folder is complete")
    return layout, manifest, decoded


def write_cache(root: Path, final: Path, layout: Layout, manifest: dict, decoded: list) -> dict:
    """The decoded folder written to `final` (replacing an older cache); returns its manifest."""
    colour = any(c for _, c in decoded)
    dims = layout.dims
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        arrays = [a for a, _ in decoded]
        for index, split in enumerate(SPLITS):
            members = np.flatnonzero(layout.split == index)
            np.save(partial / f"{split}_images.npy", channel_first([arrays[i] for i in members], colour, dims))
            np.save(partial / f"{split}_labels.npy", layout.labels[members])
        info = {"python_class": None, "description": f"your data: {root.resolve()}", "task": layout.task(),
                "label": {str(i): name for i, name in enumerate(layout.class_names)},
                "n_channels": 3 if colour else 1, "dims": dims, "labelled_by": layout.labelled_by,
                "split_rule": layout.split_rule, "skipped_files": len(layout.skipped),
                "n_samples": {split: int((layout.split == i).sum()) for i, split in enumerate(SPLITS)},
                "files": {split: [layout.files[i] for i in np.flatnonzero(layout.split == i)]
                          for i, split in enumerate(SPLITS)}}
        (partial / INFO).write_text(json.dumps(info, indent=1))
        (partial / MANIFEST).write_text(json.dumps(manifest))
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        raise UserError(f"cannot write the data cache {partial} ({err.strerror})",
                        "free some space, or set MEDSIMCLR_OUTPUT_ROOT to a writable folder") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    counts = ", ".join(f"{n} {s}" for s, n in info["n_samples"].items())
    print(f"cached {len(layout.files)} {'volumes' if dims == 3 else 'images'} of {root} in {final} "
          f"({info['n_channels']} channel{'s' if colour else ''}, {layout.task()}; splits {counts}: {layout.split_rule})")
    return manifest
