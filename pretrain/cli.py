"""The command line every method's train.py shares: options, checks, and the run itself.

A method's train.py adds its own options to `pretrain_parser(Method)` and calls
`pretrain(Method, args, **its_options)`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common.augment import ALL_AUGMENTATIONS, AUGMENTATIONS, AUGMENTATIONS_3D, augmentation_dims, default_augmentation
from common.cli import Parser, add_backbone_options, new_network, size_suffix, train_parser
from common.data import MedMNISTDataModule, spatial_dims
from common.trainer import check_output, fit_and_save, uses_gpu
from models.backbones import backbone_options
from models.checkpoints import PRETRAINED, expect_kind, our_state_dict, read_checkpoint, submodule_state
from pretrain.base import KNN_MONITOR, OPTIMIZERS
from utils import UserError, resolve_encoder, seed_everything

BATCH_SIZE = 256  # the study's: min(256, N)
MONITOR_EVERY = 2  # ours: the kNN monitor encodes the training and validation images; every 2nd epoch keeps it
#                    under 10% of the training time (scripts/benchmark.py measures it)
SELECT_BY = ("knn", "contrastive")
EPOCHS = 100  # ours: the study left it to the command line


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def pretrain_parser(method) -> Parser:
    """train_parser plus the options of every pretraining method, with `method`'s defaults in the help."""
    parser = train_parser(f"{method.TITLE} pretraining on MedMNIST.", epochs=EPOCHS, batch_size=None, validate=(
        ("--monitor-every", "--val-every"), MONITOR_EVERY, "validate every N epochs: the method's metrics and the "
        "online kNN monitor (val/knn_acc, val/knn_auroc; labels serve the monitor only)"))
    parser.set_defaults(batch_size=None)
    parser.add_argument("--aug", default=None, choices=ALL_AUGMENTATIONS,
                        help=f"augmentation sequence: for images {', '.join(AUGMENTATIONS)} (default novel, the study's "
                             f"proposal), for volumes {', '.join(AUGMENTATIONS_3D)} (the default)")
    add_backbone_options(parser, "without --init")
    parser.add_argument("--optimizer", default=method.OPTIMIZER, choices=OPTIMIZERS)
    scaled = f" x batch / {method.LR_BATCH}" if method.LR_BATCH else ""
    parser.add_argument("--lr", type=positive_float, default=None, help=f"learning rate (default {method.LR:g}{scaled})")
    parser.add_argument("--weight-decay", type=float, default=method.WEIGHT_DECAY)
    own = "the last epoch" if method.OWN_MONITOR is None else f"{method.OWN_MONITOR[0]} ({method.OWN_MONITOR[1]})"
    parser.add_argument("--select-by", default="knn", choices=SELECT_BY,
                        help=f"the best checkpoint: by the kNN monitor's val/knn_auroc, or by the method's own rule: {own}")
    parser.add_argument("--init", default=None,
                        help="start from the encoder of this checkpoint (path or run name; any method, or the study's)")
    parser.add_argument("--sync-batchnorm", action=argparse.BooleanOptionalAction, default=None,
                        help="batch norm statistics over the global batch on several GPUs (default: "
                             f"{'on' if method.SYNC_BATCHNORM else 'off'} for {method.TITLE} on GPUs; "
                             "torch's SyncBatchNorm runs on CUDA only)")
    return parser


def checked_sync_batchnorm(method, args) -> bool:
    """--sync-batchnorm, or the method's default on GPUs (off on the CPU, where torch has no SyncBatchNorm)."""
    on_gpu = uses_gpu(str(args.accelerator))
    if args.sync_batchnorm is None:
        return method.SYNC_BATCHNORM and on_gpu
    if args.sync_batchnorm and not on_gpu:
        raise UserError("--sync-batchnorm needs GPUs: torch's SyncBatchNorm runs on CUDA only",
                        "leave it out on the CPU (each process then normalises its own batch)")
    return args.sync_batchnorm


def checked_augmentation(aug: str | None, flag: str) -> str:
    """--aug, or the default sequence for the images or volumes of data set `flag`; a sequence of the other kind is
    an error."""
    dims = spatial_dims(flag)
    if aug is None:
        return default_augmentation(dims)
    if augmentation_dims(aug) != dims:
        kind, fitting = ("volumes", AUGMENTATIONS_3D) if dims == 3 else ("images", AUGMENTATIONS)
        raise UserError(f"--aug {aug} is a {augmentation_dims(aug)}D sequence but {flag} holds {kind}",
                        f"use --aug {' or '.join(fitting)}")
    return aug


def encoder_options(args, data: MedMNISTDataModule, init: Path | None, ckpt: dict | None) -> dict:
    """backbone, stem, in_channels, size and resize: the --init checkpoint's (`ckpt`; --resize may change it), or
    the options' and the dataset's."""
    if init is None:
        return new_network(args.backbone, args.stem, data.num_channels, data.size, args.resize, data.dims,
                           args.patch_topk)
    options = backbone_options(dict(ckpt.get("hyper_parameters") or {}))
    network = options["backbone"] + (f", {options['stem']} stem" if options["stem"] else "")
    for option, given in (("backbone", args.backbone), ("stem", args.stem), ("patch-topk", args.patch_topk)):
        if given is not None and given != options[option.replace("-", "_")]:
            raise UserError(f"--{option} {given} differs from the --init checkpoint's network ({network})",
                            f"leave --{option} out: the encoder's network comes from {init.name}")
    return {**options, "size": data.size, "resize": args.resize or options["resize"]}


def pretrain(method, args, **method_options) -> Path:
    """Pretrain `method` (a PretrainModule subclass) as `args` say; returns the saved `<name>.ckpt`."""
    name = args.name or f"{method.RUN_PREFIX}-{args.dataset}{size_suffix(args.size)}"
    data = MedMNISTDataModule(args.dataset, args.size, args.data_dir, batch_size=BATCH_SIZE, samples=args.samples,
                              seed=args.seed, drop_last=True, storage=args.data_storage).load()
    n_train = data.num_train()
    if args.batch_size is not None and args.batch_size > n_train:
        raise UserError(f"--batch-size {args.batch_size} is larger than the {n_train} training images",
                        f"use --batch-size {n_train} or less")
    data.batch_size = args.batch_size or min(BATCH_SIZE, n_train)
    args.aug = checked_augmentation(args.aug, data.flag)
    args.sync_batchnorm = checked_sync_batchnorm(method, args)
    init = resolve_encoder(args.init, "--init", also=("resnet",)) if args.init else None
    ckpt = read_checkpoint(init) if init else None
    if ckpt is not None:
        expect_kind(ckpt, init, (PRETRAINED, "resnet"), "--init")
    seed_everything(args.seed)
    model = method(**encoder_options(args, data, init, ckpt), dataset=args.dataset, aug=args.aug,
                   optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, batch_size=data.batch_size,
                   num_train=n_train, max_epochs=args.epochs, seed=args.seed, init=str(init) if init else None,
                   **method_options)
    if ckpt is not None:  # the encoder's weights, from any method's (or a finetuned) checkpoint
        model.load_encoder_state(submodule_state(our_state_dict(ckpt), "encoder"), f"--init {init.name}")
    check_output(method.NAME, name, args.overwrite, args.resume)
    config = {**vars(args), "method": method.NAME, "name": name, "batch_size": data.batch_size,
              "data_file": str(data.path), **{k: model.hparams[k] for k in ("backbone", "stem", "in_channels", "resize")}}
    monitor, mode = KNN_MONITOR if args.select_by == "knn" else method.OWN_MONITOR or (None, "max")
    return fit_and_save(method.NAME, name, args, model, data, monitor=monitor, mode=mode, config=config)
