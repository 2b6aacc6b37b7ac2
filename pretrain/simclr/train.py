"""SimCLR pretraining on a MedMNIST dataset.

    python pretrain/simclr/train.py --dataset bloodmnist --epochs 100 --aug novel
"""
from __future__ import annotations

from pretrain.cli import pretrain_main, pretrain_parser
from pretrain.simclr.hparams import SimCLRHparams
from utils import run_cli


def build_parser():
    return pretrain_parser(SimCLRHparams)


def main(argv=None):
    return pretrain_main(SimCLRHparams, argv)


if __name__ == "__main__":
    run_cli(main)
