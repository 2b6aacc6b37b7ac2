"""The SimCLR paper's L-BFGS probe (common.evaluation.lbfgs_probe) against scikit-learn, and its choice on val."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from common.evaluation import lbfgs_probe


def blobs(n: int, classes: int, dim: int, seed: int, scale: float = 0.7):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * scale
    # features on very different scales and offsets: what standardisation is for
    return (centres[labels] + torch.randn(n, dim, generator=generator)) * torch.logspace(-2, 2, dim) + 5, labels


@pytest.mark.parametrize("C", [0.05, 1.0])
def test_fit_matches_scikit_learn_on_standardised_features(C):
    features, labels = blobs(300, 3, 8, seed=0)
    mean, std = lbfgs_probe.standardisation(features.double())
    z = (features.double() - mean) / std
    weight, bias = lbfgs_probe.fit(z, labels, 3, multilabel=False, l2=1 / (C * len(z)))
    reference = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(z.numpy(), labels.numpy())
    ours = (z @ weight.T + bias).softmax(dim=1).numpy()
    np.testing.assert_allclose(ours, reference.predict_proba(z.numpy()), atol=1e-5)
    np.testing.assert_allclose(weight.numpy(), reference.coef_, atol=1e-3, rtol=1e-3)


def test_select_folds_the_standardisation_into_a_layer_on_raw_features():
    train, val = blobs(300, 3, 8, seed=0, scale=1.5), blobs(150, 3, 8, seed=1, scale=1.5)
    layer, l2, trials = lbfgs_probe.select(train, val, 3, multilabel=False)
    assert [t["l2"] for t in trials] == list(lbfgs_probe.L2_GRID) and l2 in lbfgs_probe.L2_GRID
    best = max(trials, key=lambda t: (t["val_acc"], t["val_auroc"]))
    assert l2 == best["l2"]
    mean, std = lbfgs_probe.standardisation(train[0].double())
    weight, bias = lbfgs_probe.fit((train[0].double() - mean) / std, train[1], 3, False, l2)
    with torch.no_grad():
        raw = layer(val[0].float()).softmax(1)
    standardised = (((val[0].double() - mean) / std) @ weight.T + bias).softmax(1)
    assert torch.allclose(raw.double(), standardised, atol=1e-3)
    assert best["val_acc"] > 0.9  # the blobs are separable


def test_multilabel_fit_is_one_binary_logistic_regression_per_label():
    features, single = blobs(300, 3, 8, seed=2)
    labels = torch.nn.functional.one_hot(single, 3)
    labels[:, 2] |= (single == 0).long()  # label 2 also goes with class 0
    z = features.double()
    z = (z - z.mean(0)) / z.std(0, unbiased=False)
    C, K = 0.5, 3
    weight, bias = lbfgs_probe.fit(z, labels, K, multilabel=True, l2=1 / (C * len(z) * K))
    for k in range(K):  # the mean binary cross-entropy over N x K entries separates into K binary problems
        reference = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(z.numpy(), labels[:, k].numpy())
        np.testing.assert_allclose((z @ weight[k] + bias[k]).sigmoid().numpy(), reference.predict_proba(z.numpy())[:, 1],
                                   atol=1e-4)  # the objectives agree to 1e-10; the optimum is flat along some weights
