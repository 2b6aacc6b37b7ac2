"""Shuffling batch norm, MoCo's guard against a trivial solution.

When queries and their positive keys are normalised with the same batch statistics, the network can
match them through those statistics instead of through the images. MoCo shuffles the key batch across
GPUs so that each key is normalised among other images than its query (shuffle-BN). On one device,
MoCo's CIFAR-10 demo stands in for it with split batch norm: the batch is cut into splits normalised
separately, as on that many GPUs, and the key batch is shuffled before the split.
"""
from __future__ import annotations

import torch
from torch import nn

MIN_PER_SPLIT = 2  # batch statistics need at least two images


def split_count(batch: int, wanted: int) -> int:
    """The largest number of splits <= `wanted` that divides `batch` into splits of MIN_PER_SPLIT or more."""
    for splits in range(min(wanted, batch // MIN_PER_SPLIT), 1, -1):
        if batch % splits == 0:
            return splits
    return 1


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are computed per split of the batch (consecutive rows).
    Same parameters and buffers as BatchNorm2d (same state-dict keys); eval mode is plain batch norm.
    The running statistics follow the mean over splits of each split's statistics."""

    num_splits = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        splits = split_count(len(x), self.num_splits)
        if not self.training or splits == 1:
            return super().forward(x)
        n, c = x.shape[:2]
        groups = x.view(splits, n // splits, *x.shape[1:])  # (S, n/S, C, H, W): a view, any memory format
        dims = (1, 3, 4)
        mean = groups.mean(dims, keepdim=True)
        var = groups.var(dims, unbiased=False, keepdim=True)
        y = ((groups - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)
        with torch.no_grad():
            count = groups[0].numel() / c
            self.running_mean.lerp_(mean.mean(0).flatten(), self.momentum)
            self.running_var.lerp_((var * count / (count - 1)).mean(0).flatten(), self.momentum)
            self.num_batches_tracked.add_(1)
        return y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)


def use_split_batch_norm(module: nn.Module, splits: int) -> nn.Module:
    """Turn every BatchNorm2d of `module` into a SplitBatchNorm2d with `splits` splits, in place, keeping its
    parameters (the same tensors: an optimiser built before still updates them) and statistics."""
    for child in module.modules():
        if type(child) is nn.BatchNorm2d or isinstance(child, SplitBatchNorm2d):
            child.__class__ = SplitBatchNorm2d
            child.num_splits = splits
    return module
