"""What every pretraining method's command line and search share, without torch: the defaults of a run, and
`MethodHparams`, the class each method's `hparams.py` fills in with its name, its defaults (with their sources),
its own options and its search space.

The method's LightningModule inherits its hparams class (`class SimCLR(SimCLRHparams, PretrainModule)`), so the
defaults exist once; the command line and scripts/tune.py read the light class and import the module only to run.
"""
from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass, field

from common.augment.names import AUGMENTATIONS
from common.cli.options import NetworkOptions, TrainOptions
from common.training.hardware import uses_gpu
from utils import UserError

BATCH_SIZE = 256  # the study's: min(256, N)
MONITOR_EVERY = 2  # ours: the kNN monitor encodes the training and validation images; every 2nd epoch keeps it
#                    under 10% of the training time (scripts/benchmark.py measures it)
SELECT_BY = ("knn", "contrastive", "last")
EPOCHS = 100  # ours: the study left it to the command line
KNN_MONITOR = ("val/knn_auroc", "max")  # the default rule: the online kNN classifier's validation AUROC
OPTIMIZERS = ("adamw", "sgd")
SGD_MOMENTUM = 0.9  # MoCo v2, BYOL (with LARS) and lightly's benchmarks alike

# The search space every method shares (scripts/tune.py): option -> ("log", low, high) for a log-uniform float,
# ("float", low, high), or ("choice", values...). Learning rates span 10x either way of the method's default (see
# `search_space`); weight decay 1e-6..1e-2 brackets every method's default (1e-4 to 5e-4); the batch size, the
# sequence and its strength as the command line has them. Batch sizes above --max-batch-size are left out.
SHARED_SEARCH = {
    "weight_decay": ("log", 1e-6, 1e-2),
    "aug": ("choice", *AUGMENTATIONS),  # the image sequences; volumes have one
    "aug_strength": ("float", 0.25, 1.5),
    "batch_size": ("choice", 32, 64, 128, 256),
}
LR_SEARCH_SPAN = 10.0  # the learning rate is searched in [default / 10, default * 10], log-uniform


@dataclass(frozen=True, kw_only=True)
class PretrainOptions(TrainOptions, NetworkOptions):
    """pretrain.cli.pretrain_parser's options, checked (the recipe applied, the sequence resolved): what
    pretrain.run.pretrain reads. `extra`: the method's own options (MethodHparams.add_options), its module's
    keyword arguments."""
    time_budget: float | None
    aug: str
    aug_strength: float
    extra_unlabelled: list[str] | None
    monitor_dataset: str | None
    features: str | None
    recipe: str
    optimizer: str
    lr: float | None
    weight_decay: float
    select_by: str
    init: str | None
    sync_batchnorm: bool | None
    # the options --recipe set (pretrain.recipes.apply_recipe): config.json's "from_recipe", beside its options
    from_recipe: tuple[str, ...] = field(default=(), metadata={"record": False})
    extra: dict = field(default_factory=dict)


class MethodHparams:
    """A pretraining method's defaults and command line. Class attributes, each set with its source."""

    NAME = ""  # recorded in checkpoints as `method`; the folder pretrain/<NAME>/
    TITLE = ""  # for messages: "SimCLR", "MoCo v2", ...
    RUN_PREFIX = ""  # default run name: <RUN_PREFIX>-<dataset>
    # the method's own rule for the best checkpoint (`--select-by contrastive`): (metric, mode), or None to keep
    # the last one; by default every method's best checkpoint is chosen by the kNN monitor (KNN_MONITOR)
    OWN_MONITOR: tuple[str, str] | None = ("val/loss", "min")
    # optimiser defaults; each method sets them with their source
    OPTIMIZER = "adamw"
    LR = 1e-3
    LR_BATCH: int | None = None  # scale LR linearly to the global batch (Goyal et al. 2017): LR * batch / LR_BATCH
    WEIGHT_DECAY = 0.0
    LR_FLOOR = 0.0  # the cosine schedule ends at LR * LR_FLOOR
    # batch norm with statistics over the global batch on several GPUs (--sync-batchnorm): SimCLR's "global BN"
    # (Chen et al. 2020), which keeps a device's few images from sharing statistics that give the positive away;
    # ours for every method that has no other guard (MoCo shuffles batch norm instead)
    SYNC_BATCHNORM = True
    SEARCH: dict[str, tuple] = {}  # the method's own options to search, as SHARED_SEARCH

    @classmethod
    def add_options(cls, parser: argparse.ArgumentParser) -> None:
        """The method's own command-line options: PretrainOptions.extra, its module's keyword arguments by the same
        names."""

    @classmethod
    def search_space(cls) -> dict[str, tuple]:
        """option -> range (as SHARED_SEARCH) of scripts/tune.py's search for this method."""
        lr = ("log", cls.LR / LR_SEARCH_SPAN, cls.LR * LR_SEARCH_SPAN)  # per LR_BATCH images where the LR scales
        return {"lr": lr, **SHARED_SEARCH, **cls.SEARCH}

    @classmethod
    def module_class(cls):
        """The method's LightningModule (imports torch), by one rule: the subclass of this hparams class in the
        `module.py` beside its `hparams.py` (pretrain.simclr.hparams.SimCLRHparams -> pretrain.simclr.module)."""
        module = importlib.import_module(cls.__module__.rpartition(".")[0] + ".module")
        found = [value for value in vars(module).values()
                 if isinstance(value, type) and issubclass(value, cls) and value.__module__ == module.__name__]
        if len(found) != 1:
            raise TypeError(f"{module.__name__} defines {len(found)} subclasses of {cls.__name__}; expected one")
        return found[0]


def checked_sync_batchnorm(method, accelerator: str, sync_batchnorm: bool | None) -> bool:
    """--sync-batchnorm, or the method's default on GPUs (off on the CPU, where torch has no SyncBatchNorm)."""
    on_gpu = uses_gpu(str(accelerator))
    if sync_batchnorm is None:
        return method.SYNC_BATCHNORM and on_gpu
    if sync_batchnorm and not on_gpu:
        raise UserError("--sync-batchnorm needs GPUs: torch's SyncBatchNorm runs on CUDA only",
                        "leave it out on the CPU (each process then normalises its own batch)")
    return sync_batchnorm
