"""The top-K patch head: a ViT's embedding from its K most important patch tokens, whose scores are a heat map.

As in MoCo v2 for chest X-rays with a ViT (a learned importance per patch token, the top-K tokens averaged into
the view's embedding): a 2-layer MLP gives every patch token a scalar score s_t; the embedding of an image is

    e = sum_{t in topK(s)} softmax_{topK}(s)_t * token_t

the mean of its K highest-scoring tokens weighted by a softmax over their scores, so that the scores receive
gradient (a hard top-K alone passes none). The softmax of all scores is the image's heat map.
"""
from __future__ import annotations

import torch
from torch import nn

SCORE_HIDDEN = 128  # ours: the scoring MLP's hidden width (token dim -> 128 -> GELU -> 1)


class TopKPatchPool(nn.Module):
    """Patch tokens (N, T, D) -> embedding (N, D); `scores(tokens)` -> (N, T)."""

    def __init__(self, dim: int, k: int, hidden: int = SCORE_HIDDEN):
        super().__init__()
        if k < 1:
            raise ValueError(f"the top-K head needs k >= 1, got {k}")
        self.k = k
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def scores(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.score(tokens).squeeze(-1)  # (N, T)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] < self.k:
            raise ValueError(f"top-{self.k} of {tokens.shape[1]} patch tokens")
        scores = self.scores(tokens)
        top, index = scores.topk(self.k, dim=1)  # (N, K)
        weights = top.softmax(dim=1)  # the selected scores' softmax: gradient reaches the scoring MLP
        chosen = tokens.gather(1, index[..., None].expand(-1, -1, tokens.shape[2]))  # (N, K, D)
        return (weights[..., None] * chosen).sum(dim=1)
