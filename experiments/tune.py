"""Tune a pretraining method's hyperparameters with Optuna: learning rate, weight decay, temperature (where the
method has one), augmentation sequence and strength, batch size.

    python scripts/tune.py --dataset breastmnist --method simclr --trials 8 --budget-epochs 5
    python scripts/tune.py --dataset breastmnist --method simclr --report      # the report of the stored study
    python pretrain/simclr/train.py --config pretrain/simclr/models/tune-simclr-breastmnist/best.yaml --epochs 100

Each trial pretrains for --budget-epochs; its objective is the online kNN monitor's validation AUROC at the end
(never the test split), and trials below the median of earlier ones at the same epoch are pruned. The study is
kept in a SQLite file (--storage: any Optuna storage URL, e.g. PostgreSQL shared by several machines): the same
command after an interruption continues it. The first trial of a new study is the method's defaults. At the end
(and with --report): best.yaml (a file --config takes), trials.md/.csv and history.png, importances.png beside the
study, in pretrain/<method>/models/<study>/; the trials' checkpoints and TensorBoard runs are the method's own.
"""
from __future__ import annotations

import argparse
import os
import sys

from common.cli.parsers import NON_NEGATIVE_INT, POSITIVE_INT, add_backbone_options, data_parser
from pretrain import METHODS
from pretrain.cli import TIME_BUDGET
from pretrain.hparams import BATCH_SIZE
from utils import UserError
from experiments import few_label

OBJECTIVES = ("knn", "few-label")  # experiments.tuning.OBJECTIVES' keys
TRIALS = 20  # ours: a first look; Optuna's TPE needs a few dozen for many parameters
BUDGET_EPOCHS = 10  # ours: enough for the kNN monitor to separate settings on MedMNIST's small sets


def build_parser():
    parser = data_parser("Tune a pretraining method's hyperparameters with Optuna (objective: the kNN monitor's "
                         "validation AUROC after --budget-epochs).", labels_alias=False)
    parser.add_argument("--method", default="simclr", choices=list(METHODS), help="pretraining method")
    parser.add_argument("--trials", type=POSITIVE_INT, default=TRIALS,
                        help="finished (completed or pruned) trials the study ends with, resumed studies included")
    parser.add_argument("--budget-epochs", type=POSITIVE_INT, default=BUDGET_EPOCHS, help="epochs of each trial")
    parser.add_argument("--time-budget", type=TIME_BUDGET, default=None, metavar="MINUTES",
                        help="wall-clock minutes of each trial (pretraining's --time-budget) instead of --budget-epochs: "
                             "trials of every network and batch size at equal time")
    parser.add_argument("--objective", choices=OBJECTIVES, default="knn",
                        help="knn: the online kNN monitor's validation AUROC (all training labels); few-label: the "
                             "L-BFGS probe's validation AUROC with --labels per class, mean over --draws draws from "
                             "the train split, on the features the trial reads (searched too); never the test split")
    parser.add_argument("--labels", type=POSITIVE_INT, default=few_label.LABELS,
                        help="labelled training images per class of the few-label objective")
    parser.add_argument("--draws", type=POSITIVE_INT, default=few_label.DRAWS,
                        help="label draws the few-label objective averages")
    parser.add_argument("--search-backbone", action="store_true",
                        help="search the network too (small CNN, ResNet-18 with either stem, ViT-Tiny; --resize 64 at "
                             "28 px) instead of --backbone")
    parser.add_argument("--max-batch-size", type=POSITIVE_INT, default=BATCH_SIZE,
                        help="the largest batch size tried (32, 64, 128, 256 up to it): what memory holds")
    add_backbone_options(parser, "of every trial")
    parser.add_argument("--study-name", default=None, help="default tune-<method>-<dataset> (-<size> when not 28)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL, e.g. postgresql://user@host/db (default: a SQLite file, "
                             "pretrain/<method>/models/<study>/study.db)")
    parser.add_argument("--n-jobs", type=POSITIVE_INT, default=1,
                        help="trials at once: processes sharing the study, each with its share of the CPU cores "
                             "(at most one per core)")
    parser.add_argument("--report", action="store_true",
                        help="write the report of the stored study (best.yaml, tables, plots) and exit")
    parser.add_argument("--worker", type=NON_NEGATIVE_INT, default=0, help=argparse.SUPPRESS)  # --n-jobs's: 1..N
    return parser


def without_n_jobs(argv: list[str]) -> list[str]:
    """The command line of a --n-jobs worker: this one without --n-jobs."""
    kept, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == "--n-jobs":
            skip = True
        elif not word.startswith("--n-jobs="):
            kept.append(word)
    return kept


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.search_backbone and args.backbone is not None:
        raise UserError("--search-backbone searches the network: it excludes --backbone", "give one of them")
    cores = os.cpu_count() or 1
    n_jobs = args.n_jobs
    if n_jobs > cores:
        print(f"--n-jobs {n_jobs}: this machine has {cores} CPU cores; running {cores} trials at once")
        n_jobs = cores
    from common.cli.options import from_namespace
    from experiments import tuning

    return tuning.run(from_namespace(tuning.TuneOptions, args, n_jobs=n_jobs), without_n_jobs(argv))
