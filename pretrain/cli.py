"""The command line every method's train.py shares: its options and their checks, without torch.

A method's train.py is `pretrain_main(ItsHparams, argv)`: the parser (`pretrain_parser`, with the method's own
options), then the run (pretrain.run.pretrain, which imports torch and Lightning only once the options are valid).
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from common.cli.options import from_namespace
from common.cli.parsers import (LEARNING_RATE, WEIGHT_DECAY, Number, Parser, add_backbone_options, dataset_flag,
                                train_parser)
from common.data.sources import known_dims
from common.augment.names import (ALL_AUGMENTATIONS, AUG_STRENGTH, AUGMENTATIONS, AUGMENTATIONS_3D, augmentation_dims,
                                  default_augmentation)
from models.feature_choice import FEATURES_HELP, LAST, feature_option
from pretrain.recipes import RECIPE_NAMES, apply_recipe
from pretrain.hparams import (EPOCHS, MONITOR_EVERY, OPTIMIZERS, SELECT_BY, MethodHparams, PretrainOptions,
                              checked_sync_batchnorm)
from utils import UserError

AUG_STRENGTH_RANGE = Number(float, 0, 2, open_low=True)  # ours: at 2 the crop keeps 1% of an image at least
TIME_BUDGET = Number(float, 0, 10080, open_low=True)  # minutes; ours: up to a week, longer than a cluster job runs


def pretrain_parser(method: type[MethodHparams]) -> Parser:
    """train_parser plus the options of every pretraining method and `method`'s own (its defaults in the help)."""
    parser = train_parser(f"{method.TITLE} pretraining on MedMNIST.", epochs=None, batch_size=None, validate=(
        ("--monitor-every", "--val-every"), MONITOR_EVERY, "validate every N epochs: the method's metrics and the "
        "online kNN monitor (val/knn_acc, val/knn_auroc; labels serve the monitor only)"))
    parser.set_defaults(batch_size=None)
    parser.options()["epochs"].help = (f"training epochs (default {EPOCHS}); with --time-budget: as many as fit in "
                                       "it, and --epochs caps them")
    parser.add_argument("--time-budget", type=TIME_BUDGET, default=None, metavar="MINUTES",
                        help="wall-clock minutes for the whole run: it times a few of its steps, sets the epochs (and "
                             "so the cosine schedule) to fit, stops at the budget and records what it achieved in "
                             "<name>.config.json (time_budget); not with --resume")
    parser.add_argument("--aug", default=None, choices=ALL_AUGMENTATIONS,
                        help=f"augmentation sequence: for images {', '.join(AUGMENTATIONS)} (default novel, the study's "
                             f"proposal), for volumes {', '.join(AUGMENTATIONS_3D)} (the default)")
    parser.add_argument("--aug-strength", type=AUG_STRENGTH_RANGE, default=AUG_STRENGTH,
                        help="how far views stray from their image: the crop's smallest share and the colour jitter "
                             "(intensity, for volumes) scale with it; 1: the sequences as published")
    add_backbone_options(parser, "without --init")
    parser.add_argument("--extra-unlabelled", nargs="+", type=dataset_flag, default=None, metavar="DATASET",
                        help="more training images for pretraining only (MedMNIST flags, folders or npz files, at "
                             "--size; their labels unused): --dataset's splits still serve the monitor, validation "
                             "and every later stage; colour and grey converted to --dataset's channels")
    parser.add_argument("--monitor-dataset", type=dataset_flag, default=None, metavar="DATASET",
                        help="a labelled data set (flag, folder or npz, at --size) whose train and val splits serve "
                             "the kNN monitor instead of --dataset's: a monitor, and checkpoint selection by it, for "
                             "pretraining on unlabelled scans; colour and grey converted to --dataset's channels")
    parser.add_argument("--features", type=feature_option, default=None,
                        help=FEATURES_HELP + "; what the kNN monitor reads, recorded in the checkpoint so that the "
                             f"probe and the label-efficiency command read the same by default (default {LAST})")
    parser.add_argument("--recipe", choices=RECIPE_NAMES, default="default",
                        help="the options left out: default, the recipe measured to pay at equal wall time for this "
                             "kind of data (grey, colour, volumes; pretrain/recipes.py), or study, the study's settings "
                             "exactly (ResNet-18, ImageNet stem, novel, best checkpoint by val acc_top5)")
    parser.add_argument("--optimizer", default=method.OPTIMIZER, choices=OPTIMIZERS)
    scaled = f" x batch / {method.LR_BATCH}" if method.LR_BATCH else ""
    parser.add_argument("--lr", type=LEARNING_RATE, default=None, help=f"learning rate (default {method.LR:g}{scaled})")
    parser.add_argument("--weight-decay", type=WEIGHT_DECAY, default=method.WEIGHT_DECAY)
    own = "the last epoch" if method.OWN_MONITOR is None else f"{method.OWN_MONITOR[0]} ({method.OWN_MONITOR[1]})"
    parser.add_argument("--select-by", default=None, choices=SELECT_BY,
                        help=f"the checkpoint kept: by the kNN monitor's val/knn_auroc (knn), by the method's own "
                             f"rule (contrastive: {own}; --recipe study's), or the last epoch's (last); default: the "
                             f"recipe's")
    parser.add_argument("--init", default=None,
                        help="start from the encoder of this checkpoint (path or run name; any method, or the study's)")
    parser.add_argument("--sync-batchnorm", action=argparse.BooleanOptionalAction, default=None,
                        help="batch norm statistics over the global batch on several GPUs (default: "
                             f"{'on' if method.SYNC_BATCHNORM else 'off'} for {method.TITLE} on GPUs; "
                             "torch's SyncBatchNorm runs on CUDA only)")
    method.add_options(parser)
    parser.checks.append(lambda args: check_pretrain_options(method, args, parser.given))
    return parser


def check_pretrain_options(method: type[MethodHparams], args: argparse.Namespace, given: set[str]) -> None:
    """What the parser checks across options: --recipe fills what the command line left out, the sequence fits the
    data set (resolved in place: the record says which ran), --sync-batchnorm has GPUs (its default is resolved by the run: it depends on the machine), --epochs
    is EPOCHS unless given or derived from --time-budget, which cannot --resume."""
    apply_recipe(method.NAME, args, given)
    args.aug = checked_augmentation(args.aug, args.dataset)
    if args.time_budget is None and args.epochs is None:
        args.epochs = EPOCHS
    if args.time_budget is not None and args.resume:
        raise UserError("--time-budget and --resume exclude each other: the budget, and the epochs it plans, are "
                        "one uninterrupted run's",
                        "resume with --epochs N in place of --time-budget, N the planned_epochs its config.json has")
    if args.sync_batchnorm:
        checked_sync_batchnorm(method, args.accelerator, args.sync_batchnorm)


def method_command(method: type[MethodHparams]):
    """(build_parser, main) of a method's train.py: all that differs between them is `method`."""
    def build_parser() -> Parser:
        return pretrain_parser(method)

    def main(argv=None) -> Path:
        return pretrain_main(method, argv)

    return build_parser, main


def pretrain_main(method: type[MethodHparams], argv=None) -> Path:
    """A method's train.py: parse and check the options, then pretrain (importing torch only then)."""
    options = from_namespace(PretrainOptions, pretrain_parser(method).parse_args(argv))
    from pretrain.run import pretrain

    return pretrain(method.module_class(), options)


def pretrain_options(method: type[MethodHparams], given: Iterable[str] = (), **values) -> PretrainOptions:
    """`method`'s options as its command line's defaults give them, with `values` (typed; checked, the recipe
    applied, as the command line's are: for another command that runs pretraining, e.g. a search's trial). A value
    None is left to the recipe unless its dest is in `given`."""
    return from_namespace(PretrainOptions, pretrain_parser(method).parse_values(values, given))


def checked_augmentation(aug: str | None, flag: str) -> str:
    """--aug, or the default sequence for the images or volumes of data set `flag`; a sequence of the other kind is
    an error."""
    dims = known_dims(flag)
    if aug is None:
        return default_augmentation(dims)
    if augmentation_dims(aug) != dims:
        kind, fitting = ("volumes", AUGMENTATIONS_3D) if dims == 3 else ("images", AUGMENTATIONS)
        raise UserError(f"--aug {aug} is a {augmentation_dims(aug)}D sequence but {flag} holds {kind}",
                        f"use --aug {' or '.join(fitting)}")
    return aug
