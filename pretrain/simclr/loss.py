"""NT-Xent (InfoNCE), SimCLR's contrastive loss, and its decoupled variant (DCL), as pure functions."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z: torch.Tensor, temperature: float, decoupled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent loss over 2N views, and the rank of each positive among its 2N-1 candidates.

    z: (2N, D) projections; rows i and i+N are the two views of image i.
    With s_ij = cos(z_i, z_j) / temperature and p(i) the other view of i,

        NT-Xent (Chen et al. 2020):  loss = -1/(2N) sum_i log( exp(s_{i,p(i)}) / sum_{j != i} exp(s_ij) )
        DCL (Yeh et al. 2022):       loss = -1/(2N) sum_i [ s_{i,p(i)} - log sum_{j != i, p(i)} exp(s_ij) ]

    DCL drops the positive from the denominator, which removes the coupling that makes NT-Xent's
    gradient vanish when the positive is already close, and helps most at small batches.

    Returns (loss: scalar, rank: (2N,) long, 0 when the positive is the most similar candidate).
    Uniform embeddings (all z equal) give log(2N - 1) for NT-Xent and log(2N - 2) for DCL.

    Example:
        >>> z = torch.randn(8, 128)          # 4 images x 2 views
        >>> loss, rank = nt_xent(z, 0.07)
    """
    n2 = z.shape[0]
    z = F.normalize(z, dim=1)
    logits = z @ z.T / temperature  # (2N, 2N) scaled cosine similarities
    self_mask = torch.eye(n2, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))  # a view is never its own candidate
    positive = torch.arange(n2, device=z.device).roll(n2 // 2)  # (2N,) index of the other view
    pos_logit = logits.gather(1, positive[:, None])  # (2N, 1)
    if decoupled:
        negatives = logits.scatter(1, positive[:, None], float("-inf"))  # (2N, 2N): neither self nor positive
        loss = (torch.logsumexp(negatives, dim=1) - pos_logit[:, 0]).mean()
    else:
        loss = F.cross_entropy(logits, positive)
    with torch.no_grad():
        rank = (logits > pos_logit).sum(dim=1)  # candidates scored above the positive
    return loss, rank
