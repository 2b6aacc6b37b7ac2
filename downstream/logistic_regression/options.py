"""The logistic-regression stage's options, typed (train.py's command line parses them; probe.py reads them)."""
from __future__ import annotations

from dataclasses import dataclass

from common.cli.options import NetworkOptions, TrainOptions


@dataclass(frozen=True, kw_only=True)
class ProbeOptions(TrainOptions, NetworkOptions):
    samples_per_class: int | None
    encoder: str | None  # a checkpoint (path or run name), random, imagenet or pixels; None: pretrain-<dataset>
    features: str | None  # None: what the encoder's pretraining read, else last
    solver: str
    lr: float
    weight_decay: float
