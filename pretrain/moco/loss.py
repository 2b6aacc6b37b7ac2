"""MoCo's InfoNCE loss against a queue of negative keys, as a pure function."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor,
             temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE of each query against its positive key and the K negative keys of the queue.

    q: (N, D) queries; k: (N, D) their positive keys (from the key encoder, no gradient);
    queue: (K, D) negative keys. All are L2-normalised here. With temperature t,

        l_pos = q . k / t        (N, 1)
        l_neg = q . queue^T / t  (N, K)
        loss  = -1/N sum_i log( exp(l_pos_i) / (exp(l_pos_i) + sum_j exp(l_neg_ij)) )
              = cross-entropy of the logits [l_pos, l_neg] (N x (1+K)) with target 0

    Returns (loss: scalar, rank: (N,) long, the number of negatives scored above the positive).
    All vectors equal gives loss = log(K + 1).

    Example:
        >>> q, k, queue = torch.randn(4, 128), torch.randn(4, 128), torch.randn(16, 128)
        >>> loss, rank = info_nce(q, k, queue, 0.2)
    """
    q, k, queue = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(queue, dim=1)
    l_pos = (q * k).sum(dim=1, keepdim=True) / temperature  # (N, 1)
    l_neg = q @ queue.T / temperature  # (N, K)
    logits = torch.cat([l_pos, l_neg], dim=1)  # (N, 1 + K): the positive is class 0
    loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
    with torch.no_grad():
        rank = (l_neg > l_pos).sum(dim=1)
    return loss, rank
