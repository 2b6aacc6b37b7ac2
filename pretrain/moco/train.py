"""MoCo v2 pretraining on a MedMNIST dataset.

    python pretrain/moco/train.py --dataset bloodmnist
"""
from __future__ import annotations

from pretrain.cli import pretrain_main, pretrain_parser
from pretrain.moco.hparams import MoCoHparams
from utils import run_cli


def build_parser():
    return pretrain_parser(MoCoHparams)


def main(argv=None):
    return pretrain_main(MoCoHparams, argv)


if __name__ == "__main__":
    run_cli(main)
