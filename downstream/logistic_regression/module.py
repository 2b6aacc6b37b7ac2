"""Logistic regression: one linear layer on frozen encoder features (computed once, see common.features)."""
from __future__ import annotations

import torch

from common.classifier import ClassifierModule
from models import linear_head

# the study's defaults (REFERENCE.md, "Downstream")
LR = 1e-3
WEIGHT_DECAY = 1e-3
MILESTONES = (0.6, 0.8)  # fractions of max_epochs where the learning rate drops
GAMMA = 0.1


class LogisticRegressionModule(ClassifierModule):
    """Features (N, feature_dim) -> logits (N, num_classes). Records the encoder it was trained on."""

    def __init__(
        self,
        feature_dim: int = 512,
        num_classes: int = 2,
        multilabel: bool = False,
        dataset: str = "bloodmnist",
        lr: float = LR,
        weight_decay: float = WEIGHT_DECAY,
        max_epochs: int = 100,
        encoder: str | None = None,
        encoder_md5: str | None = None,
        seed: int = 0,
        stage: str = "logistic_regression",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.head = linear_head(feature_dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        milestones = [int(f * self.hparams.max_epochs) for f in MILESTONES]
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=GAMMA)
        return [optimizer], [scheduler]
