"""Pretraining recipes (`--recipe`), without torch: the options a run takes when the command line leaves them out.

`default` is the recipe measured to pay at equal wall time (README "Pretraining that pays"), per kind of data: grey
images, colour images, volumes; `study` is the study's settings exactly (ResNet-18 with the ImageNet stem, its `novel`
sequence, the best checkpoint by val acc_top5, the last layer read). An option given on the command line (or in a
--config file) always wins; with --init the network is the checkpoint's, so a recipe sets no backbone then. A method
without a measured recipe keeps its own defaults (its hparams.py) under `default`.
"""
from __future__ import annotations

import argparse

from common.data.sources import known_dims, known_info

RECIPE_NAMES = ("default", "study")
KINDS = ("grey", "colour", "volume")

# method -> kind of data -> options: SimCLR's are the few-label searches' winners (docs/recipes/search-*.md: 20
# trials of 4 minutes each, validation AUROC at 10 labels per class), confirmed on the test split at 30 minutes
# (docs/recipes/winners30.md), each on the one set it was searched on: grey from breastmnist (trial 8), colour from
# retinamnist (trial 20). Each beat the strongest untrained features on its own set; neither beat them at 10 labels
# per class on the other set, so a new data set may want its own search (scripts/tune.py --objective few-label).
# Volumes: adrenalmnist3d's winner (trial 19), on the test split at the search's 4 minutes of one core
# (docs/recipes/search-adrenalmnist3d.md): 0.854 against the strongest untrained features' 0.791 at 10 labels per class
# A recipe's batch is capped at the training images and its --resize applies to smaller images only (pretrain.run).
# 2D keeps the last epoch (docs/recipes/default30.md): at 30 minutes the kNN monitor (78-100 validation images) kept
# epochs 3-41 of 37-131, and in each of 4 runs the last epoch probed as well or better (breastmnist, all labels: 0.917
# against the kNN-kept 0.786). Volumes: not measured, the kNN monitor stays
RECIPES: dict[str, dict[str, dict]] = {
    "simclr": {"grey": {"backbone": "resnet18", "stem": "imagenet", "resize": 64, "batch_size": 64, "aug": "novel",
                        "aug_strength": 1.38, "lr": 6.19e-5, "temperature": 0.331, "weight_decay": 2.09e-6,
                        "features": "last", "select_by": "last"},
               "colour": {"backbone": "resnet18", "stem": "imagenet", "resize": 64, "batch_size": 64,
                          "aug": "greyscale", "aug_strength": 1.04, "lr": 8.22e-4, "temperature": 0.0963,
                          "weight_decay": 1.11e-4, "features": "stage:1", "select_by": "last"},
               "volume": {"backbone": "small_cnn_3d", "batch_size": 128, "aug_strength": 0.92, "lr": 1.41e-3,
                          "temperature": 0.078, "weight_decay": 2.98e-4, "features": "stage:3"}},
}
STUDY = {"backbone": "resnet18", "stem": "imagenet", "aug": "novel", "select_by": "contrastive", "features": "last"}
FALLBACK = {"select_by": "knn", "features": "last"}  # what every recipe leaves unset resolves to
NETWORK = ("backbone", "stem", "resize")  # what --init's checkpoint decides
# what a recipe keeps under another --backbone: its data choices and checkpoint rule; the rest (stem, --resize, batch,
# learning rate, temperature, weight decay, features read) was chosen with its own network
KEPT_FOR_ANOTHER_BACKBONE = ("aug", "aug_strength", "select_by")


def data_kind(flag: str) -> str:
    """grey, colour or volume: which recipe a MedMNIST data set takes."""
    if known_dims(flag) == 3:
        return "volume"
    return "grey" if known_info(flag)["n_channels"] == 1 else "colour"


def recipe_options(method: str, recipe: str, flag: str) -> dict:
    """The options `recipe` sets for `method` on data set `flag`."""
    if recipe == "study":
        return dict(STUDY) if known_dims(flag) == 2 else {"select_by": "contrastive", "features": "last"}
    return dict(RECIPES.get(method, {}).get(data_kind(flag), {}))


def apply_recipe(method: str, args: argparse.Namespace, given: set[str]) -> None:
    """Set the options the command line (or its --config file, or a caller's values) did not give (`given`: their
    dests) to --recipe's, in place: defaults like --temperature's too; the network only without --init (the
    checkpoint's then); under another --backbone only KEPT_FOR_ANOTHER_BACKBONE. `args.from_recipe`: the dests it
    set (the run caps a recipe's batch at the training images and drops its --resize for images that large)."""
    options = recipe_options(method, args.recipe, args.dataset)
    if getattr(args, "init", None):
        options = {k: v for k, v in options.items() if k not in NETWORK}
    if "backbone" in given and args.backbone != options.get("backbone"):
        options = {k: v for k, v in options.items() if k in KEPT_FOR_ANOTHER_BACKBONE}
    options = {**FALLBACK, **options}
    args.from_recipe = tuple(key for key in options if key not in given and hasattr(args, key))
    for key in args.from_recipe:
        setattr(args, key, options[key])
