"""Finetuning from a pretrained encoder (any method) or ImageNet weights, or (--init none) the supervised baseline.

    python downstream/resnet/train.py                      # finetunes pretrain-bloodmnist
    python downstream/resnet/train.py --init none          # supervised baseline
    python downstream/resnet/train.py --init none --backbone resnet18 --stem small
    python downstream/resnet/train.py --init imagenet      # torchvision's supervised ImageNet ResNet-18

At the end, the heat maps of the final model on the validation split (explain.py) go beside the checkpoint and
into TensorBoard. The command line (no torch until the options are checked); the stage itself is finetune.py.
"""
from __future__ import annotations

from common.cli.parsers import LEARNING_RATE, add_backbone_options, add_samples_per_class, train_parser
from common.cli.options import from_namespace
from downstream.resnet.hparams import BATCH_SIZE, EPOCHS, LR, FinetuneOptions
from utils import run_cli


def build_parser():
    parser = train_parser("Finetune an encoder with a linear head (all layers), or train the supervised baseline.",
                          epochs=EPOCHS, batch_size=BATCH_SIZE)
    add_samples_per_class(parser)
    parser.add_argument("--init", default=None,
                        help="pretrained encoder (any method) or finetuned checkpoint, path or run name, 'none' "
                             "for random initialisation (the baseline), or 'imagenet' for torchvision's supervised "
                             "ImageNet weights (ResNets); default pretrain-<dataset> (-<size> when not 28)")
    add_backbone_options(parser, "with --init none or imagenet")
    parser.add_argument("--lr", type=LEARNING_RATE, default=LR, help="Adam learning rate")
    return parser


def parse_args(argv=None) -> FinetuneOptions:
    return from_namespace(FinetuneOptions, build_parser().parse_args(argv))


def options(**values) -> FinetuneOptions:
    """The stage's options as the command line's defaults give them, with `values` (typed; checked as the command
    line's are: for another command that runs finetuning, e.g. on the data it has resolved)."""
    return from_namespace(FinetuneOptions, build_parser().parse_values(values))


def main(argv=None):
    options = parse_args(argv)
    from downstream.resnet import finetune

    return finetune.run(options)


if __name__ == "__main__":
    run_cli(main)
