"""scripts/tune.py's few-label objective: what a pretrained encoder's features are worth with N labels per class.

For each of `draws` draws of N labelled images per class from the train split (the stages' own draw,
common.data.datamodule.select_subset, seeds 0..draws-1), the L-BFGS probe (common.evaluation.lbfgs_probe: standardised features, strength
chosen on val) is fitted on the encoder's features of those images, read at the features the trial's recipe names;
the score is its validation AUROC, averaged over the draws. Only the train and val splits are encoded: the test split
is never read. Torch is imported by the scoring only (tune.py's options take these defaults before it).
"""
from __future__ import annotations

from pathlib import Path

LABELS = 10  # per class: the few-label regime (the study's smallest balanced budget)
DRAWS = 5  # label draws averaged: at 10 per class a single draw moves AUROC by up to +-0.17 (README)
SPLITS = ("train", "val")  # what the objective reads: never the test split


def few_label_score(checkpoint: Path, data, features: str, labels: int = LABELS,
                    draws: int = DRAWS, accelerator: str = "cpu") -> dict:
    """{"auroc": mean validation AUROC over the draws, "aurocs": each draw's, "acc": mean validation accuracy} of the
    L-BFGS probe on `checkpoint`'s encoder read at `features`, with `labels` per class of the train split."""
    from models.checkpoints import load_encoder

    encoder = load_encoder(Path(checkpoint), "--checkpoint", data.num_channels, data.size, data.dims)
    return encoder_score(encoder, data, features, labels, draws, accelerator)


def encoder_score(encoder, data, features: str, labels: int = LABELS, draws: int = DRAWS,
                  accelerator: str = "cpu") -> dict:
    """few_label_score of an encoder already built."""
    from common.evaluation import lbfgs_probe
    from common.data.datamodule import select_subset
    from common.evaluation.features import extract_features, feature_device
    from models.stages import read_features

    reader, device = read_features(encoder.requires_grad_(False), features), feature_device(accelerator)
    encoded = {split: (extract_features(reader, data.splits[split][0], device), data.splits[split][1].to(device))
               for split in SPLITS}
    (train, train_labels), val = encoded["train"], encoded["val"]
    aurocs, accs = [], []
    for draw in range(draws):
        keep = select_subset(data.splits["train"][1], None, labels, draw, data.num_classes).to(device)
        _, l2, trials = lbfgs_probe.select((train[keep], train_labels[keep]), val, data.num_classes, data.multilabel)
        chosen = next(t for t in trials if t["l2"] == l2)
        aurocs.append(chosen["val_auroc"])
        accs.append(chosen["val_acc"])
    return {"auroc": sum(aurocs) / draws, "aurocs": aurocs, "acc": sum(accs) / draws}


def untrained_scores(data, networks: dict[str, dict], features: list[str], labels: int = LABELS, draws: int = DRAWS,
                     accelerator: str = "cpu", seed: int = 0) -> list[dict]:
    """The same objective on random-init networks (`networks`: tag -> build_backbone options, seeded by `seed`)
    read at each of `features`: the strongest untrained features a search's trials must beat, on val as they are."""
    import torch

    from models.backbones import build_backbone
    from models.stages import stage_count

    rows = []
    for tag, options in networks.items():
        torch.manual_seed(seed)
        encoder = build_backbone(**options).eval()
        for spec in features:
            if spec.startswith("stage:") and int(spec.split(":")[1]) > stage_count(encoder):
                continue
            rows.append({"network": tag, "features": spec,
                         **encoder_score(encoder, data, spec, labels, draws, accelerator)})
    return rows
