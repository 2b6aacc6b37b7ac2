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

# method -> kind of data -> options. SimCLR's: the small CNN with the study's `natural` sequence, its last layer, the
# best checkpoint by the kNN monitor (docs/recipes/confirmation.md, 5 minutes). The few-label searches' winners
# (docs/recipes/winners30.md: ResNet-18 at --resize 64, batch 64) beat the strongest untrained features at 30 minutes
# on the set each was searched on, not on the other; they are not the defaults yet: their batch of 64 is refused on
# sets of fewer training images, and the defaults must run on any set
RECIPES: dict[str, dict[str, dict]] = {
    "simclr": {"grey": {"backbone": "small_cnn", "aug": "natural"},
               "colour": {"backbone": "small_cnn", "aug": "natural"},
               "volume": {}},
}
STUDY = {"backbone": "resnet18", "stem": "imagenet", "aug": "novel", "select_by": "contrastive", "features": "last"}
FALLBACK = {"select_by": "knn", "features": "last"}  # what every recipe leaves unset resolves to


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
    checkpoint's then), its stem only for its own backbone."""
    options = {**FALLBACK, **recipe_options(method, args.recipe, args.dataset)}
    if getattr(args, "init", None):
        options.pop("backbone", None)
        options.pop("stem", None)
    if "backbone" in given and args.backbone != options.get("backbone"):
        options.pop("stem", None)
    for key, value in options.items():
        if key not in given and hasattr(args, key):
            setattr(args, key, value)
