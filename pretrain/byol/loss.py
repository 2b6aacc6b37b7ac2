"""BYOL's loss, as a pure function: the online network's prediction regresses the target's projection."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean squared error between L2-normalised predictions and targets (Grill et al. 2020, eq. 2).

    p: (N, D) online predictions q(g(f(v))); z: (N, D) target projections g'(f'(v')) of the other view
    (no gradient flows into them). With p_ and z_ the L2-normalised vectors,

        loss = 1/N sum_i || p_i - z_i ||^2 = 1/N sum_i (2 - 2 cos(p_i, z_i))

    in [0, 4]; 0 when every prediction points along its target. BYOL's symmetric loss is this loss
    with the views swapped, added: byol_loss(p1, z2) + byol_loss(p2, z1).

    Example:
        >>> p, z = torch.randn(4, 256), torch.randn(4, 256)
        >>> loss = byol_loss(p, z)
    """
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()
