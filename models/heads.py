"""Heads on top of encoder features: the pretraining methods' MLPs and the downstream classifier."""
from __future__ import annotations

from torch import nn


class ProjectionHead(nn.Sequential):
    """A 2-layer MLP (N, in_dim) -> (N, out_dim): Linear, ReLU, Linear.

    Keys `0.*` and `2.*`, as in the study's SimCLR head (`convnet.fc.0/2`) and MoCo v2's.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


def batchnorm_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """BYOL's projector and predictor (Grill et al. 2020): Linear, BatchNorm1d, ReLU, Linear; keys `0.*`, `1.*`
    (the batch norm) and `3.*`."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


def linear_head(in_dim: int, num_classes: int) -> nn.Linear:
    """The classifier of both downstream stages: (N, in_dim) -> logits (N, num_classes)."""
    return nn.Linear(in_dim, num_classes)
