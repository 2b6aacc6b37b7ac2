"""BYOL's defaults (with their sources), its command-line options and search space."""
from __future__ import annotations

from common.cli.parsers import MOMENTUM
from pretrain.hparams import MethodHparams

PROJECTION_HIDDEN, PROJECTION_DIM = 4096, 256  # BYOL: projector and predictor MLPs 4096 -> 256, with batch norm
TARGET_MOMENTUM = 0.99  # start of the cosine schedule to 1: lightly's CIFAR-10 benchmark (BYOL's ImageNet: 0.996)


class BYOLHparams(MethodHparams):
    NAME, TITLE, RUN_PREFIX = "byol", "BYOL", "byol"
    OWN_MONITOR = None  # the loss is measured against a target that moves every step: keep the last checkpoint
    # BYOL trained with LARS (0.2 per 256 images, wd 1.5e-6); torch has no LARS, so SGD as in lightly's CIFAR-10
    # benchmark (0.06 per 128 images, momentum 0.9, wd 5e-4), the setting of its published BYOL numbers
    OPTIMIZER, LR, LR_BATCH, WEIGHT_DECAY = "sgd", 0.06, 128, 5e-4
    LR_FLOOR = 0.0  # cosine schedule to 0, as both
    SEARCH = {"target_momentum": ("float", 0.9, 0.999)}  # ours: lightly's 0.99 to BYOL's 0.996 and beyond

    @classmethod
    def add_options(cls, parser):
        parser.add_argument("--target-momentum", type=MOMENTUM, default=TARGET_MOMENTUM,
                            help="the target network's momentum at the start; a cosine schedule takes it to 1")
