"""Tiny npz files in MedMNIST's own format for the tests (the generator is common/synthetic.py)."""
from __future__ import annotations

from pathlib import Path

from common.synthetic import write_synthetic

# flag -> (train, val, test) sizes; flags chosen to cover grey binary, RGB multi-class and multi-label
SPLIT_SIZES = {"breastmnist": (48, 16, 16), "bloodmnist": (64, 24, 24), "chestmnist": (48, 16, 16),
               "retinamnist": (40, 16, 20), "dermamnist": (42, 14, 14)}


def write_npz(folder: Path, flag: str, size: int = 28, seed: int = 0, splits: tuple | None = None) -> Path:
    return write_synthetic(folder, flag, size, seed, splits or SPLIT_SIZES[flag], compress=True)
