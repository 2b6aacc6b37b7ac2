"""MoCo v2 pretraining on a MedMNIST dataset.

    python pretrain/moco/train.py --dataset bloodmnist
"""
from pretrain.cli import method_command
from pretrain.moco.hparams import MoCoHparams
from utils import run_cli

build_parser, main = method_command(MoCoHparams)

if __name__ == "__main__":
    run_cli(main)
