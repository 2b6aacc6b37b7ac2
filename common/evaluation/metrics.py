"""Classification metrics for every MedMNIST task type, on whole splits (not averaged over batches).

ACC: top-1 accuracy (multi-label: mean accuracy over labels at threshold 0.5, as MedMNIST's evaluator).
AUROC: binary AUROC; multi-class and ordinal: macro one-vs-rest; multi-label: mean over labels.
Per-class accuracy: recall of each class (multi-label: accuracy of each label).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc, multiclass_auroc, multilabel_auroc

MULTILABEL_THRESHOLD = 0.5  # MedMNIST's evaluator


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Cross-entropy for single-label tasks, binary cross-entropy per label for multi-label ones."""
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, targets.float())
    return F.cross_entropy(logits, targets)


def predictions(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return (logits.sigmoid() > MULTILABEL_THRESHOLD).long() if multilabel else logits.argmax(dim=1)


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> dict:
    """{'acc', 'auroc', 'loss', 'per_class_acc', 'support'} for logits (N, K) and targets (N,) or (N, K)."""
    logits, targets = logits.float().cpu(), targets.cpu()
    num_classes = logits.shape[1]
    pred = predictions(logits, multilabel)
    if multilabel:
        labels = targets.long()
        per_class = (pred == labels).float().mean(dim=0)
        support = labels.sum(dim=0)  # positives per label
        acc = per_class.mean()
        auroc = multilabel_auroc(logits.sigmoid(), labels, num_labels=num_classes, average="macro")
    else:
        acc = (pred == targets).float().mean()
        per_class = torch.stack([(pred[targets == c] == c).float().mean() for c in range(num_classes)])
        support = torch.bincount(targets, minlength=num_classes)
        probs = logits.softmax(dim=1)
        auroc = (binary_auroc(probs[:, 1], targets) if num_classes == 2
                 else multiclass_auroc(probs, targets, num_classes=num_classes, average="macro"))
    return {
        "acc": float(acc),
        "auroc": float(auroc),
        "loss": float(classification_loss(logits, targets, multilabel)),
        "per_class_acc": [float(a) for a in per_class],  # nan for a class absent from the split
        "support": [int(n) for n in support],
    }
