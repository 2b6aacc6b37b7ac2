"""Shuffling batch norm, MoCo's guard against a trivial solution.

When queries and their positive keys are normalised with the same batch statistics, the network can
match them through those statistics instead of through the images. MoCo shuffles the key batch across
GPUs so that each key is normalised among other images than its query (shuffle-BN). On one device,
MoCo's CIFAR-10 demo stands in for it with split batch norm: the batch is cut into splits normalised
separately, as on that many GPUs, and the key batch is shuffled before the split.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MIN_PER_SPLIT = 2  # batch statistics need at least two images


def split_count(batch: int, wanted: int) -> int:
    """The largest number of splits <= `wanted` that divides `batch` into splits of MIN_PER_SPLIT or more."""
    for splits in range(min(wanted, batch // MIN_PER_SPLIT), 1, -1):
        if batch % splits == 0:
            return splits
    return 1


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are computed per split of the batch (consecutive images).
    Same parameters and buffers as BatchNorm2d (same state-dict keys); eval mode is plain batch norm.
    The running statistics follow the mean over splits of each split's statistics, as in MoCo's demo.

    Each split is a slice of the batch in memory, normalised by the fused batch norm in its own memory
    format (no copy); only the concatenation of the results copies.
    """

    num_splits = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        splits = split_count(len(x), self.num_splits)
        if not self.training or splits == 1:
            return super().forward(x)
        parts = x.view(splits, len(x) // splits, *x.shape[1:])  # (S, N/S, C, H, W): a view in any memory format
        means, variances = self.running_mean.repeat(splits, 1), self.running_var.repeat(splits, 1)  # (S, C)
        y = torch.cat([F.batch_norm(part, mean, variance, self.weight, self.bias, True, self.momentum, self.eps)
                       for part, mean, variance in zip(parts, means, variances)])  # each updates its row
        with torch.no_grad():
            self.running_mean.copy_(means.mean(0))
            self.running_var.copy_(variances.mean(0))
            self.num_batches_tracked.add_(1)
        return y


def use_split_batch_norm(module: nn.Module, splits: int) -> nn.Module:
    """Turn every BatchNorm2d of `module` into a SplitBatchNorm2d with `splits` splits, in place, keeping its
    parameters (the same tensors: an optimiser built before still updates them) and statistics."""
    for child in module.modules():
        if type(child) is nn.BatchNorm2d or isinstance(child, SplitBatchNorm2d):
            child.__class__ = SplitBatchNorm2d
            child.num_splits = splits
    return module
