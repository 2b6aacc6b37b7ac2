"""A stop on non-finite loss: before the backward pass, so no bad weights are ever checkpointed."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from utils import UserError


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
