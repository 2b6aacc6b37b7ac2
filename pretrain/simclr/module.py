"""SimCLR (Chen et al. 2020) as the study ran it: encoder f, projection head g, NT-Xent on two views."""
from __future__ import annotations

import torch

from models.heads import ProjectionHead
from pretrain.base import PretrainModule, rank_metrics
from pretrain.simclr.hparams import LOSSES, PROJECTION_DIM, PROJECTION_EXPANSION, TEMPERATURE, SimCLRHparams
from pretrain.simclr.loss import nt_xent


class SimCLR(SimCLRHparams, PretrainModule):
    def __init__(self, temperature: float = TEMPERATURE, loss: str = "ntxent", projection_dim: int = PROJECTION_DIM,
                 **base):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        super().__init__(**base)
        feature_dim = self.encoder.feature_dim
        self.projector = ProjectionHead(feature_dim, PROJECTION_EXPANSION * projection_dim, projection_dim)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(views))  # (2N, projection_dim)

    def step(self, views: torch.Tensor, split: str):
        z1, z2 = self(views).chunk(2)
        z = torch.cat([self.gather(z1), self.gather(z2)])  # negatives from every device, views in two halves
        loss, rank = nt_xent(z, self.hparams.temperature, decoupled=self.hparams.loss == "dcl")
        return loss, rank_metrics(rank)
