"""Pretraining methods, one folder each: `pretrain/<method>/` holds `module.py` (the method: a subclass of
`pretrain.base.PretrainModule` adding its heads and loss), `loss.py`, a thin `train.py` and a README.

METHODS maps the name a checkpoint records (`method`) to its class; nothing outside pretrain/ names a method.
"""
from __future__ import annotations

import importlib

from utils import UserError

METHODS = {
    "simclr": "pretrain.simclr.module:SimCLR",
    "moco": "pretrain.moco.module:MoCo",
    "byol": "pretrain.byol.module:BYOL",
}


def method_class(name: str):
    """The PretrainModule subclass of method `name`."""
    if name not in METHODS:
        raise UserError(f"unknown pretraining method {name!r}", f"this version knows {', '.join(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)
