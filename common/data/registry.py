"""The MedMNIST data sets by flag, their sizes and folders, without importing torch.

The command line checks --dataset and --size when it parses them, before the heavy imports. medmnist's package
imports torch on its first line, so its table (`medmnist/info.py`, which imports nothing heavy) is loaded here on
its own: one source for the flags, read from the installed medmnist.
"""
from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

from utils import UserError


def _medmnist_info():
    """medmnist/info.py as a module of its own (not medmnist.info, which would run medmnist/__init__.py)."""
    package = importlib.util.find_spec("medmnist")
    if package is None or not package.submodule_search_locations:
        raise ImportError("the medmnist package is not installed (pip install -r requirements.txt)")
    info = Path(package.submodule_search_locations[0]) / "info.py"
    spec = importlib.util.spec_from_file_location("_medmnist_info", info)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_INFO_MODULE = _medmnist_info()
INFO: dict[str, dict] = _INFO_MODULE.INFO
DEFAULT_DATA_DIR = Path(_INFO_MODULE.DEFAULT_ROOT)
SIZES = (28, 64, 128, 224)  # the sizes MedMNIST+ ships for 2D flags
SIZES_3D = (28, 64)  # and for 3D flags (28^3, 64^3 voxels)
FLAGS_3D = tuple(flag for flag in INFO if flag.endswith("3d"))


def dataset_info(flag: str) -> dict:
    """INFO[flag] for a MedMNIST flag (2D or 3D); a UserError naming the closest flag otherwise."""
    if flag in INFO:
        return INFO[flag]
    close = difflib.get_close_matches(flag, list(INFO), n=1)
    hint = f"did you mean {close[0]}?" if close else f"choose one of {', '.join(INFO)}"
    raise UserError(f"unknown dataset '{flag}'", hint)


def spatial_dims(flag: str) -> int:
    """2 for image flags, 3 for volume flags (MedMNIST names them <organ>mnist3d)."""
    return 3 if flag in FLAGS_3D else 2


def is_multilabel(info: dict) -> bool:
    return info["task"].startswith("multi-label")  # chestmnist: "multi-label, binary-class"


def check_size(flag: str, size: int) -> None:
    """A UserError unless MedMNIST ships `flag` at `size` px (voxels per side for 3D flags)."""
    sizes, what = (SIZES_3D, "3D data sets") if spatial_dims(flag) == 3 else (SIZES, "2D data sets")
    if size not in sizes:
        unit = " voxels per side" if spatial_dims(flag) == 3 else " px"
        raise UserError(f"unsupported size {size} for {flag}", f"{what} come in {', '.join(map(str, sizes))}{unit}")


def npz_path(flag: str, size: int, data_dir: Path) -> Path:
    check_size(flag, size)
    return Path(data_dir) / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")
