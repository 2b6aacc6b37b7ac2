"""Heads on top of encoder features."""
from __future__ import annotations

from torch import nn

# the study's projection head: feature_dim -> 4 * hidden_dim -> ReLU -> hidden_dim (512 -> 512 -> 128)
PROJECTION_HIDDEN_DIM = 128
PROJECTION_EXPANSION = 4


class ProjectionHead(nn.Sequential):
    """SimCLR's MLP g(h): (N, in_dim) -> (N, hidden_dim). Keys `0.*` and `2.*` as in the study."""

    def __init__(self, in_dim: int = 512, hidden_dim: int = PROJECTION_HIDDEN_DIM):
        super().__init__(
            nn.Linear(in_dim, PROJECTION_EXPANSION * hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(PROJECTION_EXPANSION * hidden_dim, hidden_dim),
        )


def linear_head(in_dim: int, num_classes: int) -> nn.Linear:
    """The classifier of both downstream stages: (N, in_dim) -> logits (N, num_classes)."""
    return nn.Linear(in_dim, num_classes)
