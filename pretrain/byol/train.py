"""BYOL pretraining on a MedMNIST dataset.

    python pretrain/byol/train.py --dataset bloodmnist
"""
from __future__ import annotations

from pretrain.cli import pretrain_main, pretrain_parser
from pretrain.byol.hparams import BYOLHparams
from utils import run_cli


def build_parser():
    return pretrain_parser(BYOLHparams)


def main(argv=None):
    return pretrain_main(BYOLHparams, argv)


if __name__ == "__main__":
    run_cli(main)
