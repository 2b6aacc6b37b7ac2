"""The SimCLR paper's linear evaluation for transfer (Chen et al. 2020, appendix B.8): an l2-regularised
multinomial logistic regression on standardised frozen features, fitted full-batch with L-BFGS, its
regularisation strength chosen on the validation split.

For a strength l2, the weights W (K, D) and bias b (K,) minimise

    L(W, b) = mean_i CE(W z_i + b, y_i) + (l2 / 2) ||W||^2,    z_i = (x_i - mu) / sigma

(multi-label: binary cross-entropy per label), mu and sigma the training features' mean and standard
deviation; the bias is not penalised (as scikit-learn). scikit-learn's LogisticRegression(C) minimises
C sum_i CE + ||W||^2 / 2, the same problem at l2 = 1 / (C N). Every strength of the grid is fitted, from the
strongest down, each starting from the previous solution; the one with the best validation accuracy (then
AUROC) is kept, and the standardisation is folded into the returned linear layer (W / sigma, b - W mu / sigma),
so it reads raw features like the AdamW head.
"""
from __future__ import annotations

import torch
from torch import nn

from common.evaluation.metrics import classification_loss, classification_metrics

# the SimCLR paper searched 45 log-spaced strengths from 1e-6 to 1e5; one per decade here (ours: 12 fits)
L2_GRID = tuple(10.0 ** k for k in range(5, -7, -1))
MAX_ITER = 500  # L-BFGS iterations per strength (ours: converged well before on MedMNIST-sized problems)
HISTORY = 20  # L-BFGS memory (ours)
TOLERANCE_GRAD = 1e-9  # stop when the largest gradient entry is below (ours: probabilities within 1e-6 of scikit-learn)
TOLERANCE_CHANGE = 1e-12  # or the loss changes less (ours)
MIN_STD = 1e-6  # a constant feature (a dead unit, a blank border pixel) is centred but not scaled


def standardisation(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and standard deviation of each feature over (N, D), the latter at least MIN_STD."""
    return features.mean(dim=0), features.std(dim=0, unbiased=False).clamp_min(MIN_STD)


def fit(features: torch.Tensor, labels: torch.Tensor, num_classes: int, multilabel: bool, l2: float,
        start: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """W (K, D), b (K,) minimising L above on already standardised `features` (N, D), float64."""
    x = features.double()
    weight = nn.Parameter(start[0].clone() if start else torch.zeros(num_classes, x.shape[1], dtype=x.dtype,
                                                                        device=x.device))
    bias = nn.Parameter(start[1].clone() if start else torch.zeros(num_classes, dtype=x.dtype, device=x.device))
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=MAX_ITER, history_size=HISTORY,
                                  tolerance_grad=TOLERANCE_GRAD, tolerance_change=TOLERANCE_CHANGE,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = classification_loss(x @ weight.T + bias, labels, multilabel) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def select(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor], num_classes: int,
           multilabel: bool, grid: tuple[float, ...] = L2_GRID) -> tuple[nn.Linear, float, list[dict]]:
    """Fit every strength of `grid` on `train` (features, labels), keep the best on `val`. Returns the linear
    layer on raw features, its strength, and each strength's validation metrics."""
    mean, std = standardisation(train[0].double())
    z_train, z_val = (train[0].double() - mean) / std, (val[0].double() - mean) / std
    best, start, trials = None, None, []
    for l2 in grid:
        start = fit(z_train, train[1], num_classes, multilabel, l2, start)
        metrics = classification_metrics(z_val @ start[0].T + start[1], val[1], multilabel)
        trials.append({"l2": l2, "val_acc": metrics["acc"], "val_auroc": metrics["auroc"]})
        if best is None or (metrics["acc"], metrics["auroc"]) > (best[0]["acc"], best[0]["auroc"]):
            best = (metrics, l2, start)
    _, l2, (weight, bias) = best
    layer = nn.Linear(train[0].shape[1], num_classes)
    with torch.no_grad():
        layer.weight.copy_(weight / std)
        layer.bias.copy_(bias - (weight * mean / std).sum(dim=1))
    return layer, l2, trials
