"""Finetuning's defaults (the study's, docs/REFERENCE.md "Downstream") and its options, typed, without torch: the
command line's (train.py parses them; finetune.py reads them)."""
from __future__ import annotations

from dataclasses import dataclass

from common.cli.options import NetworkOptions, TrainOptions

BATCH_SIZE = 128  # the study's: min(128, N)
EPOCHS = 100  # ours: the study left it to the command line
LR = 1e-3  # the study's Adam learning rate


@dataclass(frozen=True, kw_only=True)
class FinetuneOptions(TrainOptions, NetworkOptions):
    samples_per_class: int | None
    init: str | None  # a checkpoint (path or run name), imagenet or none; None: pretrain-<dataset>
    lr: float
