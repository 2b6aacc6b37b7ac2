"""The strongest untrained reference: the best features a user could have without pretraining, chosen on the
validation split (never on test).

Raw pixels and a random-init network's last layer are weak references: a random-init network read at an early
stage is often much stronger (on small grey images a random small CNN's pooled first block beats every last layer).
So every probe table gains one row: for random-init networks of the head's own backbone and of the small CNN, every
candidate of models.feature_choice.candidates (the last layer, each stage pooled, all stages concatenated) is fitted
with the L-BFGS probe (common.evaluation.lbfgs_probe: standardised features, strength chosen on val) on the labelled training
images, and the candidate with the best validation AUROC (then accuracy) is the reference. Only the train and val
splits are encoded for the choice.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from common.evaluation import lbfgs_probe
from common.data.datamodule import MedMNISTDataModule
from common.evaluation.features import extract_features
from models.backbones import build_backbone
from models.feature_choice import candidates
from models.pixels import PIXELS
from models.stages import all_stages, split_candidates, stage_count

SMALL_CNN = {2: "small_cnn", 3: "small_cnn_3d"}  # the hard reference on small images (issue 20's measurements)
CHOICE_SPLITS = ("train", "val")  # what the choice reads: never the test split
TAG = "best-untrained"  # its row's name in tables


def untrained_networks(network: dict, data: MedMNISTDataModule) -> list[dict]:
    """The build_backbone options of the networks tried: `network`'s backbone (stem, resize, top-K head as it has
    them; none for the raw pixels) and the small CNN, for the data's channels and size."""
    own = [] if network["backbone"] == PIXELS else [{**network, "in_channels": data.num_channels, "size": data.size}]
    small = {"backbone": SMALL_CNN[data.dims], "stem": None, "in_channels": data.num_channels, "size": data.size,
             "resize": None, "patch_topk": None}
    return own + [small] * all(n["backbone"] != small["backbone"] for n in own)


def random_network(options: dict, seed: int) -> torch.nn.Module:
    """The random-init network `options` builds, its weights drawn from `seed` (as the probe's --encoder random)."""
    torch.manual_seed(seed)
    return build_backbone(**options).requires_grad_(False)


def encode_candidates(options: dict, seed: int, splits: dict, device: torch.device,
                      wanted: tuple[str, ...] = CHOICE_SPLITS) -> dict[str, dict[str, tuple]]:
    """{candidate spec: {split: (features, labels)}} of the random-init network, every candidate from one pass."""
    return encode_network_candidates(random_network(options, seed), splits, device, wanted)


def encode_network_candidates(network: torch.nn.Module, splits: dict, device: torch.device,
                              wanted: tuple[str, ...] = CHOICE_SPLITS) -> dict[str, dict[str, tuple]]:
    """{candidate spec: {split: (features, labels)}} of `network` (random-init or pretrained), from one pass."""
    reader = all_stages(network)
    encoded = {split: (extract_features(reader, splits[split][0], device), splits[split][1].to(device))
               for split in wanted}
    split_up = {split: split_candidates(x, reader) for split, (x, _) in encoded.items()}
    specs = candidates(stage_count(reader.encoder))
    return {spec: {split: (split_up[split][spec], encoded[split][1]) for split in wanted} for spec in specs}


@dataclass(frozen=True)
class Choice:
    network: dict  # build_backbone options of the chosen random-init network
    features: str  # its features read (models.feature_choice)
    val_auroc: float
    val_acc: float
    tried: tuple  # (network tag, features, val AUROC, val accuracy) of every candidate


def choose(encoded: dict[str, dict[str, dict[str, tuple]]], networks: dict[str, dict], num_classes: int,
           multilabel: bool, keep: torch.Tensor | None = None) -> Choice:
    """The candidate with the best validation AUROC (then accuracy) of the L-BFGS probe. `encoded`: network tag ->
    encode_candidates' output; `networks`: tag -> its options; `keep`: the labelled training images' indices."""
    tried, best = [], None
    for tag, specs in encoded.items():
        for spec, splits in specs.items():
            train, val = splits["train"], splits["val"]
            if keep is not None:
                index = keep.to(train[0].device)
                train = (train[0][index], train[1][index])
            _, l2, trials = lbfgs_probe.select(train, val, num_classes, multilabel)
            chosen = next(t for t in trials if t["l2"] == l2)
            score = (chosen["val_auroc"], chosen["val_acc"])
            tried.append((tag, spec, *score))
            if best is None or score > best[2:]:
                best = (tag, spec, *score)
    tag, spec, auroc, acc = best
    return Choice(networks[tag], spec, auroc, acc, tuple(tried))


def best_features(encoded: dict[str, dict[str, tuple]], num_classes: int, multilabel: bool,
                  keep: torch.Tensor | None = None) -> Choice:
    """--features best: which of a network's own candidates (`encoded` by encode_network_candidates: its last
    layer, each stage pooled, all stages) the L-BFGS probe on the labelled training images (`keep` of the train
    split: all of it when None) scores best with on the validation split, as the strongest untrained reference is
    chosen; the test split is never read."""
    return choose({"encoder": encoded}, {"encoder": {}}, num_classes, multilabel, keep)


def tried_text(choice: Choice) -> str:
    """The candidates' validation AUROCs, best first, for a run's message: 'stage:1 0.812, last 0.790, ...'."""
    ranked = sorted(choice.tried, key=lambda t: (t[2], t[3]), reverse=True)
    return ", ".join(f"{spec} {auroc:.3f}" for _, spec, auroc, _ in ranked)
