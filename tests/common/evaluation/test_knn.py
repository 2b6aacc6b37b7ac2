"""The kNN monitor's classifier against its definition and on features with a known answer."""
import math

import pytest
import torch
import torch.nn.functional as F

from common.evaluation.knn import knn_metrics, knn_scores


def test_scores_are_the_softmax_weighted_vote_of_the_k_nearest():
    torch.manual_seed(0)
    bank, labels, queries = torch.randn(30, 5), torch.randint(0, 3, (30,)), torch.randn(4, 5)
    scores = knn_scores(bank, labels, queries, num_classes=3, k=7, temperature=0.5)
    for q in range(4):
        sims = torch.tensor([float(F.cosine_similarity(queries[q], b, dim=0)) for b in bank])
        top = sims.argsort(descending=True)[:7]
        weights = [math.exp(float(sims[j]) / 0.5) for j in top]
        for c in range(3):
            expected = sum(w for w, j in zip(weights, top) if labels[j] == c) / sum(weights)
            assert float(scores[q, c]) == pytest.approx(expected, rel=1e-5)
    assert torch.allclose(scores.sum(1), torch.ones(4))


def clusters(n: int, classes: int, dim: int = 16, spread: float = 0.05, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[:classes] * 5
    labels = torch.arange(n) % classes
    return centres[labels] + spread * torch.randn(n, dim, generator=generator), labels


def test_well_separated_features_score_one():
    bank, bank_labels = clusters(200, 4)
    queries, query_labels = clusters(80, 4, seed=1)
    metrics = knn_metrics(bank, bank_labels, queries, query_labels, num_classes=4, multilabel=False)
    assert metrics["acc"] == 1.0 and metrics["auroc"] == pytest.approx(1.0)


def test_random_features_score_about_chance():
    generator = torch.Generator().manual_seed(2)
    bank, queries = torch.randn(2000, 32, generator=generator), torch.randn(1000, 32, generator=generator)
    bank_labels, query_labels = torch.randint(0, 4, (2000,), generator=generator), torch.randint(0, 4, (1000,),
                                                                                               generator=generator)
    metrics = knn_metrics(bank, bank_labels, queries, query_labels, num_classes=4, multilabel=False)
    assert abs(metrics["acc"] - 0.25) < 0.06 and abs(metrics["auroc"] - 0.5) < 0.05


def test_multilabel_scores_are_weighted_fractions_of_neighbours():
    bank, single = clusters(60, 3)
    bank_labels = F.one_hot(single, 3).float()
    bank_labels[:, 2] = (single == 0).float()  # label 2 goes with label 0
    queries, query_single = clusters(30, 3, seed=1)
    query_labels = F.one_hot(query_single, 3).float()
    query_labels[:, 2] = (query_single == 0).float()
    metrics = knn_metrics(bank, bank_labels, queries, query_labels, num_classes=3, multilabel=True)
    assert metrics["acc"] == 1.0 and metrics["auroc"] == pytest.approx(1.0)
