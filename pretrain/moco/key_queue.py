"""MoCo's dictionary: a first-in, first-out queue of the most recent keys, the negatives of the next steps."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KeyQueue(nn.Module):
    """The last `size` keys (K, D), L2-normalised; enqueueing a batch dequeues the oldest entries.

    Keys and the write position are buffers, so a checkpoint holds the queue and `--resume` restores it.
    It starts filled with random unit vectors, as in MoCo.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1:
            raise ValueError(f"the queue needs at least one key, got size {size}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))  # where the next key is written

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write (n, D) keys over the n oldest, wrapping around; with n > K only the last K are kept."""
        size = len(self.keys)
        keys = F.normalize(keys.detach(), dim=1)[-size:]
        index = (self.pointer + torch.arange(len(keys), device=self.keys.device)) % size
        self.keys[index] = keys.to(self.keys.dtype)
        self.pointer.copy_((self.pointer + len(keys)) % size)

    def ordered(self) -> torch.Tensor:
        """The keys from oldest to newest."""
        return self.keys.roll(-int(self.pointer), dims=0)
