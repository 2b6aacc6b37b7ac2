"""BYOL pretraining on a MedMNIST dataset.

    python pretrain/byol/train.py --dataset bloodmnist
"""
from __future__ import annotations

from pretrain.byol.module import TARGET_MOMENTUM, BYOL
from pretrain.cli import fraction, pretrain, pretrain_parser
from utils import run_cli


def main(argv=None):
    parser = pretrain_parser(BYOL)
    parser.add_argument("--target-momentum", type=fraction, default=TARGET_MOMENTUM,
                        help="the target network's momentum at the start; a cosine schedule takes it to 1")
    args = parser.parse_args(argv)
    return pretrain(BYOL, args, target_momentum=args.target_momentum)


if __name__ == "__main__":
    run_cli(main)
