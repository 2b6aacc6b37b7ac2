"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent"): an online network with a predictor learns to
predict a slow-moving target network's projection of the other view; no negatives."""
from __future__ import annotations

import math

import torch

from models.heads import batchnorm_mlp
from pretrain.base import PretrainModule
from pretrain.byol.hparams import PROJECTION_DIM, PROJECTION_HIDDEN, TARGET_MOMENTUM, BYOLHparams
from pretrain.byol.loss import byol_loss
from pretrain.momentum import ema_update, momentum_copy



def target_momentum(base: float, progress: float) -> float:
    """BYOL's schedule: tau = 1 - (1 - base) * (cos(pi * progress) + 1) / 2, from `base` at the start of
    training (progress 0) to 1 at its end (progress 1)."""
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


class BYOL(BYOLHparams, PretrainModule):
    def __init__(self, target_momentum: float = TARGET_MOMENTUM, projection_dim: int = PROJECTION_DIM,
                 projection_hidden: int = PROJECTION_HIDDEN, **base):
        super().__init__(**base)
        self.projector = batchnorm_mlp(self.encoder.feature_dim, projection_hidden, projection_dim)
        self.predictor = batchnorm_mlp(projection_dim, projection_hidden, projection_dim)
        self.target_encoder, self.target_projector = momentum_copy(self.encoder), momentum_copy(self.projector)

    def on_encoder_loaded(self) -> None:
        self.target_encoder.load_state_dict(self.encoder.state_dict())

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(self.encoder(views)))  # online predictions (M, projection_dim)

    def momentum(self) -> float:
        """The target's momentum now: the cosine schedule over all of training's steps."""
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 0
        progress = self.trainer.global_step / total if total and math.isfinite(total) else 0.0
        return target_momentum(self.hparams.target_momentum, min(1.0, progress))

    def step(self, views: torch.Tensor, split: str):
        n, metrics = len(views) // 2, {}
        if split == "train":
            tau = self.momentum()
            ema_update(((self.encoder, self.target_encoder), (self.projector, self.target_projector)), tau)
            metrics["target_momentum"] = torch.tensor(tau)
        predictions = self(views)  # both views in one pass
        with torch.no_grad():
            targets = self.target_projector(self.target_encoder(views)).roll(n, dims=0)  # the other view's
        loss = 2 * byol_loss(predictions, targets)  # byol_loss(p1, z2) + byol_loss(p2, z1): halves of equal size
        return loss, metrics
