"""BYOL pretraining on a MedMNIST dataset.

    python pretrain/byol/train.py --dataset bloodmnist
"""
from pretrain.cli import method_command
from pretrain.byol.hparams import BYOLHparams
from utils import run_cli

build_parser, main = method_command(BYOLHparams)

if __name__ == "__main__":
    run_cli(main)
