"""Test a finetuned or baseline classifier on the test split.

    python downstream/resnet/test.py --dataset bloodmnist --checkpoint downstream-bloodmnist
"""
from __future__ import annotations

from common.cli.options import DataOptions, from_namespace
from common.evaluation.open_checkpoint import open_checkpoint, test_parser
from downstream.resnet.finetune import test_finetuned
from utils import run_cli


def build_parser():
    return test_parser("Test a finetuned/baseline classifier on the test split.")


def main(argv=None):
    args = build_parser().parse_args(argv)
    path, ckpt, data, hardware = open_checkpoint(from_namespace(DataOptions, args, subset=True), args.checkpoint,
                                                 ["resnet"], ("resnet",))
    test_finetuned(path, ckpt, data, hardware)


if __name__ == "__main__":
    run_cli(main)
