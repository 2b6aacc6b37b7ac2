"""Momentum (exponential moving average) copies of networks, for methods with a slow-moving twin of their
encoder and head: MoCo's key encoder and projector, BYOL's target encoder and projector."""
from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of `module`: the optimiser never sees it, `ema_update` moves it."""
    return copy.deepcopy(module).requires_grad_(False)


@torch.no_grad()
def ema_update(pairs: Iterable[tuple[nn.Module, nn.Module]], momentum: float) -> None:
    """theta_target <- momentum * theta_target + (1 - momentum) * theta_online, for every parameter of every
    (online, target) pair. Buffers (batch-norm statistics) are the target's own, from its own forward passes."""
    for online, target in pairs:
        for p_online, p_target in zip(online.parameters(), target.parameters(), strict=True):
            p_target.lerp_(p_online.detach(), 1.0 - momentum)
