"""MoCo v2's defaults (with their sources), its command-line options and search space."""
from __future__ import annotations

from common.cli.parsers import MOMENTUM, POSITIVE_INT
from common.cli.parsers import TEMPERATURE as TEMPERATURE_RANGE
from pretrain.hparams import MethodHparams

TEMPERATURE = 0.2  # MoCo v2
PROJECTION_DIM = 128  # MoCo v2's MLP head: feature_dim -> feature_dim (2048 for ResNet-50) -> ReLU -> 128
QUEUE_SIZE = 65536  # MoCo v2's dictionary size, capped at the number of training images (see default_queue_size)
KEY_MOMENTUM = 0.99  # lightly's CIFAR-10 benchmark; MoCo v2's 0.999 suits ImageNet's 5,000 steps per epoch,
#                      on a small data set (a few steps per epoch) the key encoder would hardly move
BN_SPLITS = 8  # MoCo's CIFAR-10 demo: split batch norm with 8 splits stands in for shuffle-BN on 8 GPUs
SYMMETRIC = True  # MoCo's CIFAR-10 demo: each view is a query of the other (twice the loss terms per image)


class MoCoHparams(MethodHparams):
    NAME, TITLE, RUN_PREFIX = "moco", "MoCo v2", "moco"
    # the loss and the rank of the positive are measured against a queue that changes every step, so they do
    # not compare between epochs (a random network ranks first, until the queue holds real keys): keep the last
    OWN_MONITOR = None
    OPTIMIZER, LR, LR_BATCH, WEIGHT_DECAY = "sgd", 0.03, 256, 1e-4  # MoCo v2: SGD 0.03 per 256 images, wd 1e-4
    LR_FLOOR = 0.0  # MoCo v2: cosine schedule to 0
    SYNC_BATCHNORM = False  # MoCo shuffles batch norm across the devices instead (keys())
    SEARCH = {"temperature": ("log", 0.05, 1.0),  # ours: around MoCo v2's 0.2
              "key_momentum": ("float", 0.9, 0.999)}  # ours: lightly's 0.99 to MoCo v2's 0.999

    @classmethod
    def add_options(cls, parser):
        parser.add_argument("--temperature", type=TEMPERATURE_RANGE, default=TEMPERATURE)
        parser.add_argument("--queue-size", type=POSITIVE_INT, default=None,
                            help=f"negative keys kept (default min({QUEUE_SIZE}, training images))")
        parser.add_argument("--key-momentum", type=MOMENTUM, default=KEY_MOMENTUM,
                            help="momentum of the key encoder's moving average")
        parser.add_argument("--bn-splits", type=POSITIVE_INT, default=BN_SPLITS,
                            help="split batch norm on one device (1: plain batch norm); several devices shuffle "
                                 "instead")
