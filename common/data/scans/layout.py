"""A user's folder of scans: which files it holds, their labels and their splits. No torch, nothing decoded.

Files: every PNG, JPEG, TIFF, BMP, DICOM (.dcm) or NIfTI (.nii, .nii.gz) below the folder, recursively, in sorted
order of their relative paths (hidden files and folders skipped); other files (notes, spreadsheets, ...) are
skipped and counted, since folders of scans often hold them. A folder may hold 2D images or 3D volumes, not both.
A DICOM series is one volume, named by its folder (`patient1/ct/` in labels files too): a folder of at least
MIN_SERIES_SLICES .dcm files whose first and last (in name order) have one SeriesInstanceUID and a position in the
patient; a folder of radiographs (no position, or a series each) stays a folder of 2D images.

Labels (`--labels`):
- a CSV file: a header, then `path,label[,split]` rows, `path` relative to the folder (or absolute); several label
  columns make a multi-label data set (each column 0/1). Every image file needs one row, every row one file.
- `folders`: the class is the first subfolder (below `train/`, `val/`, `test/` where those exist).
- `none`: unlabelled (pretraining only).
- not given: `folders` when every file sits in a subfolder and there are at least two of them, else `none`.
Classes are the label values in sorted order (numerically where all are integers).

Splits: the folder's own (`train/`, `val/`, `test/` at its top) or the CSV's `split` column (train, val or test);
else a seeded split stratified by class, SPLIT_FRACTIONS of each class (SPLIT_SEED: the same split at every
stage and every run). A split the folder or CSV leaves empty (say no `val/`) is drawn from its training images in
the same proportions.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.data.scans.decode import is_scan, is_volume
from utils import UserError

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}  # ours, MedMNIST's usual 7:1:2
SPLIT_SEED = 0  # fixed: every stage of every run sees the same split
LABEL_MODES = ("folders", "none")  # besides a CSV path
MIN_SERIES_SLICES = 3  # ours: fewer slices than this are not read as a volume (a cubic resize of 2 slices is noise)


@dataclass
class Layout:
    """The files of a folder (relative paths, in the cache's order), their labels and splits."""

    root: Path
    files: list[str]
    split: np.ndarray  # (N,) index into SPLITS
    labels: np.ndarray  # (N, 1) class indices, (N, L) 0/1 for multi-label, (N, 1) zeros when unlabelled
    class_names: list[str] = field(default_factory=list)  # empty: unlabelled
    multilabel: bool = False
    labelled_by: str = "none"  # "folders", "none" or the CSV's path
    split_rule: str = ""
    skipped: list[str] = field(default_factory=list)  # files that are not scans

    @property
    def dims(self) -> int:
        return 3 if is_volume(self.root / self.files[0]) else 2

    def task(self) -> str:
        """MedMNIST's names for the task."""
        if not self.class_names:
            return "unlabelled"
        if self.multilabel:
            return "multi-label, binary-class"
        return "binary-class" if len(self.class_names) == 2 else "multi-class"


def scan(root: Path) -> tuple[list[str], list[str]]:
    """(scans, other files) below `root`, relative, sorted; hidden files and folders left out. A DICOM series is
    one scan, its folder's relative path with a trailing slash."""
    scans, others = [], []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        (scans if is_scan(path) else others).append(relative.as_posix())
    return sorted(group_series(root, scans)), others


def group_series(root: Path, files: list[str]) -> list[str]:
    """`files` with the slices of each DICOM series replaced by their folder ("a/b/"): the rule above."""
    from common.data.scans.decode import series_uid

    by_folder: dict[str, list[str]] = {}
    for name in files:
        if name.lower().endswith(".dcm"):
            by_folder.setdefault(name.rpartition("/")[0], []).append(name)
    series = set()
    for folder, slices in by_folder.items():
        if len(slices) >= MIN_SERIES_SLICES:
            first, last = series_uid(root / slices[0]), series_uid(root / slices[-1])
            if first is not None and first == last:
                series.add(folder)
    if not series:
        return files
    kept = [f for f in files if not (f.lower().endswith(".dcm") and f.rpartition("/")[0] in series)]
    return kept + [f"{folder}/" if folder else "./" for folder in series]


def item_path(name: str) -> str:
    """A scan's relative path without a series' trailing slash (for class and split folders)."""
    return name.rstrip("/")


def read_layout(root: Path, labels: str | None = None) -> Layout:
    """The folder's files, labels (`labels`: a CSV path, folders, none, or None for the rule above) and splits."""
    if not root.is_dir():
        raise UserError(f"{root} is not a folder")
    files, others = scan(root)
    if not files:
        what = f"{len(others)} files, none of them" if others else "no files, so no"
        raise UserError(f"{root} holds {what} PNG, JPEG, TIFF, BMP, DICOM or NIfTI images",
                        "point --dataset at the folder of your scans")
    volumes = sum(is_volume(root / f) for f in files)
    if 0 < volumes < len(files):
        first_2d = next(f for f in files if not is_volume(root / f))
        raise UserError(f"{root} mixes {len(files) - volumes} 2D images and {volumes} 3D volumes (e.g. {first_2d})",
                        "keep 2D images and volumes in separate folders")
    if labels not in (None, *LABEL_MODES):
        layout = csv_layout(root, files, Path(labels).expanduser())
    else:
        layout = folder_layout(root, files, labels)
    layout.skipped = others
    return layout


def split_folder(relative: str) -> str | None:
    relative = item_path(relative)
    top = relative.split("/")[0]
    return top if top in SPLITS and "/" in relative else None


def folder_layout(root: Path, files: list[str], mode: str | None) -> Layout:
    """Labels from class subfolders (or none), splits from train/ val/ test/ (or drawn)."""
    tops = [split_folder(f) for f in files]
    if any(tops):
        outside = [f for f, top in zip(files, tops) if top is None]
        if outside:
            raise UserError(f"{root} has train/val/test folders but {len(outside)} files outside them "
                            f"(e.g. {outside[0]})", "move them into one of the split folders")
    inner = [item_path(f).split("/", 1)[1] if top else item_path(f) for f, top in zip(files, tops)]
    classes = [f.split("/")[0] if "/" in f else None for f in inner]
    if mode is None:
        mode = "folders" if None not in classes and len(set(classes)) >= 2 else "none"
    if mode == "folders":
        loose = [f for f, c in zip(files, classes) if c is None]
        if loose:
            raise UserError(f"--labels folders: {len(loose)} files of {root} are in no class folder (e.g. {loose[0]})",
                            "put every image in a folder named after its class, or give --labels labels.csv")
        names = sorted_classes(set(classes))
        if len(names) < 2:
            raise UserError(f"{root} has one class folder ({names[0]})", "labels need at least two classes")
        index = {name: i for i, name in enumerate(names)}
        labels = np.array([[index[c]] for c in classes], dtype=np.int64)
    else:
        names, labels = [], np.zeros((len(files), 1), dtype=np.int64)
    given = np.array([SPLITS.index(top) if top else -1 for top in tops])
    split, rule = assign_splits(given, labels if names else None, "the folder's train/ val/ test/")
    return Layout(root, files, split, labels, names, False, mode, rule)


def read_csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise UserError(f"--labels {path}: no such file", "give a CSV file, folders or none")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as err:
        raise UserError(f"--labels {path} is not UTF-8 text (byte {err.start})",
                        "save the CSV as UTF-8") from None
    except csv.Error as err:
        raise UserError(f"--labels {path} is not a readable CSV ({err})") from None
    if len(rows) < 2:
        raise UserError(f"--labels {path} has no rows below its header", "header path,label[,split], then a row per file")
    header = [cell.strip() for cell in rows[0]]
    return header, [[cell.strip() for cell in row] for row in rows[1:]]


def csv_layout(root: Path, files: list[str], path: Path) -> Layout:
    """Labels (and splits, with a `split` column) from a CSV; its rows in the cache's order."""
    header, rows = read_csv_rows(path)
    columns = [i for i, name in enumerate(header) if i > 0 and name.lower() != "split"]
    split_column = next((i for i, name in enumerate(header) if name.lower() == "split"), None)
    if not columns:
        raise UserError(f"--labels {path} has no label column", "header path,label[,split]")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise UserError(f"--labels {path} line {number} has {len(row)} cells, the header {len(header)}")
    known = set(files)
    named = [relative_name(root, row[0]) for row in rows]
    named = [name + "/" if name + "/" in known else name for name in named]  # a series named without its slash
    missing = [row[0] for row, name in zip(rows, named) if name not in known]
    if missing:
        raise UserError(f"--labels {path} names {len(missing)} files that are not images in {root} (e.g. {missing[0]})",
                        "fix the paths (relative to the folder) or remove those rows")
    repeated = len(named) - len(set(named))
    if repeated:
        raise UserError(f"--labels {path} names {repeated} files twice", "one row per file")
    unlisted = sorted(known - set(named))
    if unlisted:
        raise UserError(f"{len(unlisted)} images in {root} are in no row of {path.name} (e.g. {unlisted[0]})",
                        "add a row for each, or move them out of the folder")
    multilabel = len(columns) > 1
    values = [[row[i] for i in columns] for row in rows]
    if multilabel:
        labels, names = multilabel_values(path, header, columns, values)
    else:
        names = sorted_classes({v[0] for v in values})
        if "" in names:
            raise UserError(f"--labels {path}: a row has an empty label", "give every file a label")
        if len(names) < 2:
            raise UserError(f"--labels {path}: the label column holds one class ({names[0]})",
                            "labels need at least two classes")
        index = {name: i for i, name in enumerate(names)}
        labels = np.array([[index[v[0]]] for v in values], dtype=np.int64)
    given = np.full(len(rows), -1)
    if split_column is not None:
        for i, row in enumerate(rows):
            name = row[split_column].lower()
            if name not in SPLITS:
                raise UserError(f"--labels {path} line {i + 2}: unknown split {row[split_column]!r}",
                                f"use {', '.join(SPLITS)}")
            given[i] = SPLITS.index(name)
    split, rule = assign_splits(given, None if multilabel else labels, f"the split column of {path.name}")
    return Layout(root, named, split, labels, names, multilabel, str(path), rule)


def relative_name(root: Path, text: str) -> str:
    path = Path(text)
    if path.is_absolute():
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return text
    return path.as_posix()


def multilabel_values(path: Path, header: list[str], columns: list[int], values: list[list[str]]):
    try:
        labels = np.array([[int(v) for v in row] for row in values], dtype=np.int64)
    except ValueError:
        labels = None
    if labels is None or not np.isin(labels, (0, 1)).all():
        raise UserError(f"--labels {path}: with several label columns each must be 0 or 1", "one column per label")
    flat = [i for i in range(labels.shape[1]) if len(set(labels[:, i])) < 2]
    if flat:
        raise UserError(f"--labels {path}: label column {header[columns[flat[0]]]} holds one value only",
                        "drop it: a label that never changes cannot be learned")
    return labels, [header[i] for i in columns]


def sorted_classes(values: set) -> list[str]:
    """Class names in order: numerically when every one is an integer."""
    try:
        return sorted(values, key=int)
    except (TypeError, ValueError):
        return sorted(values, key=str)


def assign_splits(given: np.ndarray, labels: np.ndarray | None, source: str) -> tuple[np.ndarray, str]:
    """Each file's split: `given` (-1 where not given), the rest drawn, stratified by `labels` where single-label,
    with SPLIT_SEED; returns (splits, the rule that made them)."""
    split = given.copy()
    generator = np.random.default_rng(SPLIT_SEED)
    if (split < 0).all():
        pool, fractions = np.arange(len(split)), [SPLIT_FRACTIONS[s] for s in SPLITS]
        rule = "drawn: {:.0%} / {:.0%} / {:.0%}, stratified by class, seed {}".format(*fractions, SPLIT_SEED)
    else:
        if (split < 0).any():
            raise UserError(f"{source} leaves {(split < 0).sum()} files without a split", "give each file one")
        missing = [s for s in SPLITS if not (split == SPLITS.index(s)).any()]
        if not missing:
            return split, source
        pool = np.flatnonzero(split == 0)
        if "train" in missing:
            raise UserError(f"{source} has no training images", "put some in train")
        share = {s: SPLIT_FRACTIONS[s] for s in missing}
        fractions = [1 - sum(share.values()) if s == "train" else share.get(s, 0.0) for s in SPLITS]
        rule = f"{source}; {' and '.join(missing)} drawn from train ({', '.join(f'{share[s]:.0%}' for s in missing)})"
    groups = [pool] if labels is None else [pool[labels[pool, 0] == c] for c in np.unique(labels[pool, 0])]
    for group in groups:
        order = generator.permutation(group)
        counts = [round(f * len(order)) for f in fractions[1:]]
        split[order] = 0
        split[order[:counts[0]]] = 1  # none where val is the folder's own: its fraction is 0 then
        split[order[counts[0]:counts[0] + counts[1]]] = 2
    for s in (1, 2):  # a tiny set: one image at least in each split
        if fractions[s] and not (split == s).any():
            candidates = np.flatnonzero(split == 0)
            if len(candidates) < 2:
                raise UserError(f"too few images ({len(split)}) for a train/val/test split", "add images")
            split[generator.choice(candidates)] = s
    return split, rule
