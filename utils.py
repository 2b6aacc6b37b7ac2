"""Small helpers every stage uses: repository paths, user-facing errors, seeding, atomic writes.

Paths resolve from this file, never from the working directory, so every command runs from anywhere.
"""
from __future__ import annotations

import logging
import os
import random
import re
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

REPO_ROOT = Path(__file__).resolve().parent

# the downstream stages' folders; a pretraining method's stage is its folder pretrain/<method> (the method's name)
DOWNSTREAM_STAGES = {
    "logistic_regression": Path("downstream") / "logistic_regression",
    "resnet": Path("downstream") / "resnet",
}
PRETRAIN_FOLDER = Path("pretrain")
METHOD_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # a method's name becomes a folder name: nothing else
OUTPUT_ROOT_VARIABLE = "MEDSIMCLR_OUTPUT_ROOT"  # e.g. a scratch disk; tests point it at a temporary folder


def stage_folder(stage: str) -> Path:
    """`downstream/<stage>` for the downstream stages, `pretrain/<method>` for a pretraining method."""
    if stage in DOWNSTREAM_STAGES:
        return DOWNSTREAM_STAGES[stage]
    if not METHOD_NAME.fullmatch(stage):
        raise ValueError(f"{stage!r} is not a stage or method name")
    return PRETRAIN_FOLDER / stage


def output_root() -> Path:
    """The folder holding the stage folders: the repository unless $MEDSIMCLR_OUTPUT_ROOT is set."""
    return Path(os.environ.get(OUTPUT_ROOT_VARIABLE) or REPO_ROOT).expanduser()


def models_dir(stage: str) -> Path:
    """`<root>/<stage folder>/models`, where checkpoints (`<name>.ckpt`) and TensorBoard logs (`tb_logs/`) go."""
    return output_root() / stage_folder(stage) / "models"


def pretrain_stages(root: Path | None = None) -> list[str]:
    """The pretraining methods that have a models folder under `root` (default: the output root)."""
    folders = sorted(((root or output_root()) / PRETRAIN_FOLDER).glob("*/models"))
    return [p.parent.name for p in folders if p.is_dir() and METHOD_NAME.fullmatch(p.parent.name)]


class UserError(Exception):
    """A mistake in the user's command or files: shown as one line, exit code 2, no traceback."""

    def __init__(self, what: str, fix: str = ""):
        super().__init__(f"{what} ({fix})" if fix else what)


# Lightning notices that do not apply to in-memory loaders and batched on-device augmentation
QUIET_WARNINGS = ".*(LeafSpec|on_after_batch_transfer|log_every_n_steps|many workers|litlogger).*"


ON_EXIT: list[Callable[[], None]] = []  # what a command undoes however it ends (common.training.run_lock: its run locks)


def run_cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Run a command's `main`, turning a UserError into `error: ...` on stderr and exit code 2."""
    warnings.filterwarnings("ignore", message=QUIET_WARNINGS)
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage())
    try:
        try:
            main(argv)
        finally:
            for undo in ON_EXIT:
                undo()
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


def resolve_checkpoint(name_or_path: str, stages: str | list[str], option: str, where: str | None = None) -> Path:
    """A path to an existing file, or a bare run name looked up in the models folder of `stages`
    (several: the name must be in exactly one of them). `where` names the folders in the error."""
    stages = [stages] if isinstance(stages, str) else list(stages)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    found = [candidate.resolve() for stage in stages
             for candidate in (models_dir(stage) / f"{name_or_path}.ckpt", models_dir(stage) / name_or_path)
             if candidate.is_file()]
    if len(found) > 1:
        raise UserError(f"{option} {name_or_path}: runs of that name in {' and '.join(str(p.parent) for p in found)}",
                        "give the path of the one you mean")
    if found:
        return found[0]
    where = where or " or ".join(str(models_dir(stage)) for stage in stages)
    raise UserError(f"{option} {name_or_path}: no such checkpoint", f"give a path to a .ckpt file or a run name from {where}")


def resolve_encoder(name_or_path: str, option: str, also: tuple[str, ...] = ()) -> Path:
    """A checkpoint path, or a run name of any pretraining method (or of the stages in `also`)."""
    where = " or ".join([str(output_root() / PRETRAIN_FOLDER / "<method>" / "models"), *map(str, map(models_dir, also))])
    return resolve_checkpoint(name_or_path, pretrain_stages() + list(also), option, where)
