"""Pretraining methods, one folder each: `pretrain/<method>/` holds `hparams.py` (its name, defaults, options and
search space, without torch), `module.py` (the method: a subclass of its hparams and of
`pretrain.base.PretrainModule`, adding its heads and loss), `loss.py`, a thin `train.py` and a README.

METHODS maps the name a checkpoint records (`method`) to its hparams class; a new method is one folder and one
entry in HPARAMS. Nothing outside pretrain/ names a method.
"""
from __future__ import annotations

from pretrain.byol.hparams import BYOLHparams
from pretrain.moco.hparams import MoCoHparams
from pretrain.simclr.hparams import SimCLRHparams
from utils import UserError

HPARAMS = (SimCLRHparams, MoCoHparams, BYOLHparams)  # the light classes: no torch until a method runs
METHODS = {hparams.NAME: hparams for hparams in HPARAMS}


def method_hparams(name: str):
    """The MethodHparams subclass of method `name` (no torch)."""
    if name not in METHODS:
        raise UserError(f"unknown pretraining method {name!r}", f"this version knows {', '.join(METHODS)}")
    return METHODS[name]


def method_class(name: str):
    """The PretrainModule subclass of method `name`."""
    return method_hparams(name).module_class()
