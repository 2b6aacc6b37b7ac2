"""SimCLR pretraining on a MedMNIST dataset.

    python pretrain/simclr/train.py --dataset bloodmnist --epochs 100 --aug novel
"""
from pretrain.cli import method_command
from pretrain.simclr.hparams import SimCLRHparams
from utils import run_cli

build_parser, main = method_command(SimCLRHparams)

if __name__ == "__main__":
    run_cli(main)
