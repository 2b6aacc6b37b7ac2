"""Per-sample random parameters of the batched augmentations, drawn from a seeded generator on the device."""
from __future__ import annotations

import torch

Generator = torch.Generator | None


def uniform(n: int, low: float, high: float, generator: Generator = None,
            device: torch.device | str | None = None) -> torch.Tensor:
    """(n,) float32 uniform in [low, high)."""
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def bernoulli(n: int, p: float, generator: Generator = None,
              device: torch.device | str | None = None) -> torch.Tensor:
    """(n,) bool, True with probability p."""
    return torch.rand(n, generator=generator, device=device) < p
