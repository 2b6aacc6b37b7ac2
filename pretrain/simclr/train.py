"""SimCLR pretraining on a MedMNIST dataset.

    python pretrain/simclr/train.py --dataset bloodmnist --epochs 100 --aug novel
"""
from __future__ import annotations

from pretrain.cli import positive_float, pretrain, pretrain_parser
from pretrain.simclr.module import LOSSES, TEMPERATURE, SimCLR
from utils import run_cli


def main(argv=None):
    parser = pretrain_parser(SimCLR)
    parser.add_argument("--temperature", type=positive_float, default=TEMPERATURE)
    parser.add_argument("--loss", default="ntxent", choices=LOSSES,
                        help="ntxent (the study's) or dcl (decoupled: no positive in the denominator)")
    args = parser.parse_args(argv)
    return pretrain(SimCLR, args, temperature=args.temperature, loss=args.loss)


if __name__ == "__main__":
    run_cli(main)
