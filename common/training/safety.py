"""Runs that survive interruption: atomic checkpoint files, a stop on non-finite loss, the saved config."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback

from utils import UserError, atomic_path, atomic_write_text


WRITE_ERRNOS = {errno.ENOSPC: "no space left on", errno.EDQUOT: "disk quota exceeded on",
                errno.EACCES: "permission denied on", errno.EROFS: "read-only file system at",
                errno.ENOENT: "the folder vanished:"}
MB = 2**20


def tensor_bytes(value) -> int:
    """Bytes of every tensor in a (nested) checkpoint dict: about the size torch.save writes."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def free_bytes(folder: Path) -> int:
    existing = next(p for p in [Path(folder), *Path(folder).parents] if p.exists())
    return shutil.disk_usage(existing).free


def write_failure(err: BaseException, path: Path, need: int) -> UserError | None:
    """A one-line UserError for a write that failed for lack of space, permissions or a vanished folder (torch's
    zip writer reports a full disk as RuntimeError "unexpected pos"), else None."""
    reason = WRITE_ERRNOS.get(getattr(err, "errno", None))
    if reason is None and isinstance(err, RuntimeError) and ("unexpected pos" in str(err) or "write failed" in str(err)):
        reason = WRITE_ERRNOS[errno.ENOSPC]
    if reason is None:
        return None
    try:
        free = f"{free_bytes(path.parent) / MB:.0f} MB free; "
    except OSError:
        free = ""
    return UserError(f"{reason} {path.parent} ({free}the checkpoint needs about {need / MB:.0f} MB); {path.name} "
                     "was not written, every earlier checkpoint is kept",
                     "free some space (or fix the folder), then run the same command with --resume")


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the same folder, fsync, then rename over the final name:
    a crash during a save never leaves a truncated file under the final name; a full disk (or a folder that went
    away or cannot be written) is a one-line error, the temporary file removed."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        try:
            with atomic_path(Path(path)) as tmp:
                with open(tmp, "wb") as handle:
                    torch.save(checkpoint, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
        except (OSError, RuntimeError) as err:
            failure = write_failure(err, Path(path), tensor_bytes(checkpoint))
            if failure is None:
                raise
            raise failure from None


class NonFiniteLossError(UserError):
    pass


def check_finite(loss: torch.Tensor, trainer: pl.Trainer) -> None:
    """Raise NonFiniteLossError, naming the step, if `loss` is NaN or infinite."""
    if not torch.isfinite(loss).all():
        folder = Path(trainer.logger.log_dir) / "checkpoints" if trainer.logger else "the run's folder"
        raise NonFiniteLossError(
            f"loss is {float(loss.detach())} at step {trainer.global_step} (epoch {trainer.current_epoch})",
            f"the last good checkpoint is kept in {folder}; try a lower --lr, then --resume or start again")


class StopOnNonFiniteLoss(Callback):
    """Stop before the backward pass of a NaN/inf loss, so no bad weights are ever checkpointed."""

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        check_finite(loss, trainer)


class SaveConfig(Callback):
    """Write the resolved configuration next to the run's checkpoints when training starts."""

    def __init__(self, record: dict):
        self.record = record

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank == 0 and trainer.logger is not None:
            folder = Path(trainer.logger.log_dir) / "checkpoints"
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / "config.json", json.dumps(self.record, indent=2, default=str) + "\n")


class FlushLogsWithCheckpoints(Callback):
    """Write the logger's pending TensorBoard events to disk with every checkpoint and at the start of every
    epoch (Lightning writes an epoch's training metrics just after its checkpoint), so a run killed mid-epoch
    keeps every point of the epochs its checkpoint holds; TensorBoard's writer would otherwise wait for 10
    events or 2 minutes. A resumed run logs the later steps again, at the same step numbers."""

    @staticmethod
    def flush(trainer: pl.Trainer) -> None:
        flush = getattr(getattr(trainer.logger, "experiment", None), "flush", None)
        if trainer.global_rank == 0 and callable(flush):
            flush()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self.flush(trainer)
