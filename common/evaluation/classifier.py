"""What both downstream stages share: the loss for the task type, whole-split val/test metrics."""
from __future__ import annotations

import pytorch_lightning as pl
import torch

from common.evaluation.metrics import classification_loss, classification_metrics


class ClassifierModule(pl.LightningModule):
    """Base of the logistic-regression and ResNet stages. Subclasses define forward() -> logits (N, K).

    hparams must hold `num_classes` and `multilabel`. Validation and test metrics are computed on the
    whole split at epoch end (AUROC is not an average of per-batch values).
    """

    def __init__(self):
        super().__init__()
        self._outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.test_results: dict = {}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = classification_loss(self(x), y, self.hparams.multilabel)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def _collect(self, batch) -> None:
        x, y = batch
        self._outputs.append((self(x).detach(), y))

    def _split_metrics(self) -> dict:
        logits = torch.cat([o[0] for o in self._outputs])
        targets = torch.cat([o[1] for o in self._outputs])
        self._outputs = []  # val/test loaders are not sharded: every device sees the whole split
        return classification_metrics(logits, targets, self.hparams.multilabel)

    def on_validation_epoch_start(self) -> None:
        self._outputs = []

    def validation_step(self, batch, batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_end(self) -> None:
        metrics = self._split_metrics()
        self.log_dict({f"val/{k}": metrics[k] for k in ("loss", "acc", "auroc")}, prog_bar=True, sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self._outputs = []

    def test_step(self, batch, batch_idx: int) -> None:
        self._collect(batch)

    def on_test_epoch_end(self) -> None:
        self.test_results = self._split_metrics()
        self.log_dict({f"test/{k}": self.test_results[k] for k in ("loss", "acc", "auroc")})
