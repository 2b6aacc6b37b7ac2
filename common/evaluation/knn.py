"""A weighted k-nearest-neighbour classifier on features: pretraining's online monitor.

Wu et al. 2018 ("Unsupervised feature learning via non-parametric instance discrimination"), as solo-learn
and lightly run it during self-supervised pretraining: no training, so it reads how the features are
arranged as they are, and it needs the labels of the bank only (never for any loss).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from common.evaluation.metrics import classification_metrics

K = 20  # neighbours: solo-learn's and lightly's default
TEMPERATURE = 0.07  # of the neighbours' weights: the same
QUERY_CHUNK = 1024  # queries per similarity matrix (bank size x chunk floats at a time)
EPSILON = 1e-6  # keeps the log of a zero score finite


def knn_scores(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
               k: int = K, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Class scores (Q, C) of each query from its k most similar bank entries.

    bank: (N, D) features with labels (N,) (or (N, C) 0/1 for multi-label); queries: (Q, D). With s_qj the
    cosine similarity and w_qj = softmax over the k neighbours of s_qj / temperature,

        score_c(q) = sum_{j in top-k(q)} w_qj [y_j = c]        (multi-label: sum_j w_qj y_jc)

    Single-label scores sum to 1 over classes; a multi-label score is a weighted fraction of neighbours.
    """
    bank, queries = F.normalize(bank.float(), dim=1), F.normalize(queries.float(), dim=1)
    k = min(k, len(bank))
    targets = bank_labels.float() if bank_labels.ndim > 1 else F.one_hot(bank_labels.long(), num_classes).float()
    scores = []
    for chunk in queries.split(QUERY_CHUNK):
        similarity, neighbours = (chunk @ bank.T).topk(k, dim=1)  # (q, k)
        weights = (similarity / temperature).softmax(dim=1)
        scores.append((weights.unsqueeze(2) * targets[neighbours]).sum(dim=1))  # (q, C)
    return torch.cat(scores) if scores else torch.empty(0, num_classes, device=queries.device)


def knn_metrics(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, query_labels: torch.Tensor,
                num_classes: int, multilabel: bool, k: int = K, temperature: float = TEMPERATURE) -> dict:
    """common.evaluation.metrics' accuracy, AUROC, ... of the kNN classifier on the queries."""
    scores = knn_scores(bank, bank_labels, queries, num_classes, k, temperature).clamp(EPSILON, 1 - EPSILON)
    logits = torch.logit(scores) if multilabel else scores.log()  # what the metrics turn back into the scores
    return classification_metrics(logits, query_labels, multilabel)
