"""The Trainer's bookkeeping callbacks: the resolved config beside the checkpoints, TensorBoard events flushed
with every checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from utils import atomic_write_text


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
