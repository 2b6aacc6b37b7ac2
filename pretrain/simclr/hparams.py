"""SimCLR's defaults (the study's, docs/REFERENCE.md "Pretraining"), its command-line options and search space."""
from __future__ import annotations

from common.cli.parsers import TEMPERATURE as TEMPERATURE_RANGE
from pretrain.hparams import MethodHparams

TEMPERATURE = 0.07
PROJECTION_DIM = 128  # g(h): feature_dim -> 4 * 128 -> ReLU -> 128
PROJECTION_EXPANSION = 4
LOSSES = ("ntxent", "dcl")  # dcl: the decoupled loss (Yeh et al. 2022), see loss.py


class SimCLRHparams(MethodHparams):
    NAME, TITLE = "simclr", "SimCLR"
    RUN_PREFIX = "pretrain"  # the study's names: pretrain-<flag>.ckpt
    OWN_MONITOR = ("val/acc_top5", "max")  # the study chose its best checkpoint on val acc_top5
    OPTIMIZER, LR, WEIGHT_DECAY = "adamw", 5e-4, 1e-4  # the study's
    LR_FLOOR = 1 / 50  # the study: cosine annealing down to lr / 50
    SEARCH = {"temperature": ("log", 0.03, 1.0)}  # ours: 0.07 (the study's) to SimCLR's 0.5 and beyond

    @classmethod
    def add_options(cls, parser):
        parser.add_argument("--temperature", type=TEMPERATURE_RANGE, default=TEMPERATURE)
        parser.add_argument("--loss", default="ntxent", choices=LOSSES,
                            help="ntxent (the study's) or dcl (decoupled: no positive in the denominator)")
