"""MoCo v2 pretraining on a MedMNIST dataset.

    python pretrain/moco/train.py --dataset bloodmnist
"""
from __future__ import annotations

from common.cli import positive_int
from pretrain.cli import fraction, positive_float, pretrain, pretrain_parser
from pretrain.moco.module import BN_SPLITS, KEY_MOMENTUM, QUEUE_SIZE, TEMPERATURE, MoCo
from utils import run_cli


def main(argv=None):
    parser = pretrain_parser(MoCo)
    parser.add_argument("--temperature", type=positive_float, default=TEMPERATURE)
    parser.add_argument("--queue-size", type=positive_int, default=None,
                        help=f"negative keys kept (default min({QUEUE_SIZE}, training images))")
    parser.add_argument("--key-momentum", type=fraction, default=KEY_MOMENTUM,
                        help="momentum of the key encoder's moving average")
    parser.add_argument("--bn-splits", type=positive_int, default=BN_SPLITS,
                        help="split batch norm on one device (1: plain batch norm); several devices shuffle instead")
    args = parser.parse_args(argv)
    return pretrain(MoCo, args, temperature=args.temperature, queue_size=args.queue_size,
                    key_momentum=args.key_momentum, bn_splits=args.bn_splits)


if __name__ == "__main__":
    run_cli(main)
