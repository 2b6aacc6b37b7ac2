"""Pretraining methods, one folder each: `pretrain/<method>/` holds `hparams.py` (its name, defaults, options and
search space, without torch), `module.py` (the method: a subclass of its hparams and of
`pretrain.base.PretrainModule`, adding its heads and loss), `loss.py`, a thin `train.py` and a README.

METHODS maps the name a checkpoint records (`method`) to its hparams class; nothing outside pretrain/ names a
method.
"""
from __future__ import annotations

import importlib

from utils import UserError

METHODS = {
    "simclr": "pretrain.simclr.hparams:SimCLRHparams",
    "moco": "pretrain.moco.hparams:MoCoHparams",
    "byol": "pretrain.byol.hparams:BYOLHparams",
}


def method_hparams(name: str):
    """The MethodHparams subclass of method `name` (no torch)."""
    if name not in METHODS:
        raise UserError(f"unknown pretraining method {name!r}", f"this version knows {', '.join(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def method_class(name: str):
    """The PretrainModule subclass of method `name`."""
    return method_hparams(name).module_class()
