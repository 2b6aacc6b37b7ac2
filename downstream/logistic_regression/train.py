"""Logistic regression on frozen encoder features (computed once, in eval mode, without gradients).

    python downstream/logistic_regression/train.py --dataset bloodmnist --encoder pretrain-bloodmnist
    python downstream/logistic_regression/train.py --dataset bloodmnist --encoder random --backbone small_cnn

The command line (no torch until the options are checked); the stage itself is probe.py.
"""
from __future__ import annotations

from common.evaluation import probe_defaults as probe_hparams
from common.cli.parsers import LEARNING_RATE, WEIGHT_DECAY, add_backbone_options, add_samples_per_class, train_parser
from common.cli.options import from_namespace
from downstream.logistic_regression.options import ProbeOptions
from models.feature_choice import BEST_HELP, FEATURES_HELP, feature_choice_option
from models.choices import IMAGENET, PIXELS, RANDOM
from utils import run_cli


def build_parser():
    parser = train_parser("Logistic regression on frozen encoder features.", epochs=probe_hparams.EPOCHS,
                          batch_size=probe_hparams.BATCH_SIZE)
    add_samples_per_class(parser)
    parser.add_argument("--encoder", default=None,
                        help="encoder checkpoint of any pretraining method (or a finetuned one), path or run name, "
                             f"'{RANDOM}' for a randomly initialised --backbone, '{IMAGENET}' for torchvision's supervised ImageNet "
                             f"weights (ResNets), or '{PIXELS}' for the raw pixels; "
                             "default pretrain-<dataset> (-<size> when not 28)")
    add_backbone_options(parser, "with --encoder random or imagenet")
    parser.add_argument("--features", type=feature_choice_option, default=None,
                        help=FEATURES_HELP + BEST_HELP + "; default: what the encoder's pretraining read (its "
                             "--features), else last")
    parser.add_argument("--solver", choices=probe_hparams.SOLVERS, default="adamw",
                        help="adamw: the study's head, minibatch AdamW for --epochs; lbfgs: the transfer protocol of "
                             "Chen et al. 2020, standardised features, full-batch L-BFGS, l2 strength chosen on val "
                             "(one epoch; --epochs, --lr, --weight-decay and --batch-size do not apply)")
    parser.add_argument("--lr", type=LEARNING_RATE, default=probe_hparams.LR)
    parser.add_argument("--weight-decay", type=WEIGHT_DECAY, default=probe_hparams.WEIGHT_DECAY)
    return parser


def parse_args(argv=None) -> ProbeOptions:
    return from_namespace(ProbeOptions, build_parser().parse_args(argv))


def options(**values) -> ProbeOptions:
    """The stage's options as the command line's defaults give them, with `values` (typed; checked as the command
    line's are: for another command that runs the probe, e.g. on the data it has resolved)."""
    return from_namespace(ProbeOptions, build_parser().parse_values(values))


def main(argv=None):
    options = parse_args(argv)
    from downstream.logistic_regression import probe

    return probe.run(options)


if __name__ == "__main__":
    run_cli(main)
