"""Small helpers every stage uses: repository paths, user-facing errors, seeding, atomic writes.

Paths resolve from this file, never from the working directory, so every command runs from anywhere.
"""
from __future__ import annotations

import logging
import os
import random
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

REPO_ROOT = Path(__file__).resolve().parent

# stage name -> its folder; checkpoints (`<name>.ckpt`) and TensorBoard logs (`tb_logs/`) go in its models/
STAGES = {
    "simclr": Path("pretrain") / "simclr",
    "logistic_regression": Path("downstream") / "logistic_regression",
    "resnet": Path("downstream") / "resnet",
}
OUTPUT_ROOT_VARIABLE = "MEDSIMCLR_OUTPUT_ROOT"  # e.g. a scratch disk; tests point it at a temporary folder


def models_dir(stage: str) -> Path:
    """`<root>/<stage folder>/models`, root being the repository unless $MEDSIMCLR_OUTPUT_ROOT is set."""
    root = Path(os.environ.get(OUTPUT_ROOT_VARIABLE) or REPO_ROOT).expanduser()
    return root / STAGES[stage] / "models"


class UserError(Exception):
    """A mistake in the user's command or files: shown as one line, exit code 2, no traceback."""

    def __init__(self, what: str, fix: str = ""):
        super().__init__(f"{what} ({fix})" if fix else what)


# Lightning notices that do not apply to in-memory loaders and batched on-device augmentation
QUIET_WARNINGS = ".*(LeafSpec|on_after_batch_transfer|log_every_n_steps|many workers|litlogger).*"


def run_cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Run a command's `main`, turning a UserError into `error: ...` on stderr and exit code 2."""
    warnings.filterwarnings("ignore", message=QUIET_WARNINGS)
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage())
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:  # Lightning's own checks of --accelerator/--devices/--precision
        if type(err).__name__ != "MisconfigurationException":
            raise
        print(f"error: {str(err).splitlines()[0]} (check --accelerator, --devices and --precision)", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted (the last saved checkpoint is kept)", file=sys.stderr)
        sys.exit(130)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with `count` intra-op threads (tiny ops are fastest, and robust to load, on one)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the augmentation generator is seeded by its owner from `seed`)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path in `final`'s folder; rename it over `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the final file gets the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(final: Path, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text)


def resolve_checkpoint(name_or_path: str, stage: str, option: str) -> Path:
    """A path to an existing file, or a bare run name looked up in `stage`'s models folder."""
    path = Path(name_or_path).expanduser()
    candidates = [path, models_dir(stage) / f"{name_or_path}.ckpt", models_dir(stage) / name_or_path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise UserError(
        f"{option} {name_or_path}: no such checkpoint",
        f"give a path to a .ckpt file or a run name from {models_dir(stage)}",
    )
