"""Logistic regression on frozen encoder features (computed once, in eval mode, without gradients).

    python downstream/logistic_regression/train.py --dataset bloodmnist --encoder pretrain-bloodmnist
    python downstream/logistic_regression/train.py --dataset bloodmnist --encoder random --backbone small_cnn
"""
from __future__ import annotations

from pathlib import Path

import torch

from common import linear_probe
from common.cli import (add_backbone_options, add_samples_per_class, check_subset_options, new_network, size_suffix,
                        subset_suffix, train_parser)
from common.data import MedMNISTDataModule
from common.evaluate import run_test
from common.features import FeatureDataModule
from common.trainer import check_output, file_md5, fit_and_save
from models.backbones import build_backbone
from models.checkpoints import build_from_checkpoint, load_encoder, read_checkpoint
from models.imagenet import IMAGENET, imagenet_encoder
from models.pixels import PIXELS, RawPixels
from utils import UserError, resolve_encoder, run_cli, seed_everything

RANDOM = "random"  # --encoder random: a randomly initialised (seeded) backbone, the no-pretraining reference
REFERENCES = (RANDOM, PIXELS, IMAGENET)  # --encoder values that name no checkpoint of ours


def parse_args(argv=None):
    parser = train_parser("Logistic regression on frozen encoder features.", epochs=linear_probe.EPOCHS,
                          batch_size=linear_probe.BATCH_SIZE)
    add_samples_per_class(parser)
    parser.add_argument("--encoder", default=None,
                        help="encoder checkpoint of any pretraining method (or a finetuned one), path or run name, "
                             f"'{RANDOM}' for a randomly initialised --backbone, '{IMAGENET}' for torchvision's supervised ImageNet "
                             f"weights (ResNets), or '{PIXELS}' for the raw pixels; "
                             "default pretrain-<dataset> (-<size> when not 28)")
    add_backbone_options(parser, "with --encoder random or imagenet")
    parser.add_argument("--solver", choices=linear_probe.SOLVERS, default="adamw",
                        help="adamw: the study's head, minibatch AdamW for --epochs; lbfgs: the transfer protocol of "
                             "Chen et al. 2020, standardised features, full-batch L-BFGS, l2 strength chosen on val "
                             "(one epoch; --epochs, --lr, --weight-decay and --batch-size do not apply)")
    parser.add_argument("--lr", type=float, default=linear_probe.LR)
    parser.add_argument("--weight-decay", type=float, default=linear_probe.WEIGHT_DECAY)
    return parser.parse_args(argv)


def frozen_encoder(reference: str, data: MedMNISTDataModule, seed: int = 0, backbone: str | None = None,
                   stem: str | None = None, resize: int | None = None, patch_topk: int | None = None):
    """The encoder named by --encoder (path, run name, 'random' or 'pixels'), frozen, and its path (or the
    reference's name)."""
    network_given = backbone is not None or stem is not None or resize is not None or patch_topk is not None
    if reference == PIXELS and not network_given:
        return RawPixels(data.num_channels, data.size, data.dims), PIXELS
    if reference == RANDOM:
        options = new_network(backbone, stem, data.num_channels, data.size, resize, data.dims, patch_topk)
        torch.manual_seed(seed)
        return build_backbone(**options).requires_grad_(False), RANDOM
    if reference == IMAGENET:
        if patch_topk is not None:
            raise UserError("--patch-topk: ImageNet weights are for ResNets, which have no patch tokens",
                            "leave --patch-topk out with --encoder imagenet")
        encoder = imagenet_encoder(backbone, data.num_channels, data.size, stem, resize, data.dims)
        return encoder.requires_grad_(False), IMAGENET
    if network_given:
        raise UserError("--backbone, --stem, --resize and --patch-topk choose the network of --encoder random or "
                        "imagenet only",
                        "the raw pixels have no network" if reference == PIXELS else
                        f"the network of {reference} is the one its checkpoint records")
    path = resolve_encoder(reference, "--encoder", also=("resnet",))
    encoder = load_encoder(path, "--encoder", data.num_channels, data.size, data.dims)
    return encoder.requires_grad_(False), path


def main(argv=None):
    args = parse_args(argv)
    check_subset_options(args)
    data = MedMNISTDataModule(args.dataset, args.size, args.data_dir, storage=args.data_storage, samples=args.samples,
                              samples_per_class=args.samples_per_class, seed=args.seed)
    data.load()
    encoder, encoder_path = frozen_encoder(args.encoder or f"pretrain-{args.dataset}{size_suffix(args.size)}", data, args.seed,
                                           args.backbone, args.stem, args.resize, args.patch_topk)
    return train_probe(args, data, encoder, encoder_path, FeatureDataModule(data, encoder))


def train_probe(args, data: MedMNISTDataModule, encoder, encoder_path, features: FeatureDataModule) -> Path:
    """Train the head on `features` (of `data`'s splits through the frozen `encoder`: computed in its setup, or
    handed in already computed) and save it as `<name>.ckpt`, as every run of this stage."""
    name = args.name or f"downstream-{args.dataset}{size_suffix(args.size)}{subset_suffix(args)}"
    check_output("logistic_regression", name, args.overwrite, args.resume)
    if args.solver == "lbfgs":
        args.epochs = 1  # the whole fit, every strength of the grid, is one epoch
    seed_everything(args.seed)
    model = linear_probe.LogisticRegressionModule(
        feature_dim=encoder.feature_dim, num_classes=data.num_classes, multilabel=data.multilabel,
        dataset=args.dataset, lr=args.lr, weight_decay=args.weight_decay, max_epochs=args.epochs,
        encoder=str(encoder_path), encoder_md5=None if encoder_path in REFERENCES else file_md5(encoder_path),
        seed=args.seed, batch_size=min(args.batch_size, data.num_train()),
        backbone=encoder.backbone_options["backbone"], stem=encoder.backbone_options["stem"],
        resize=encoder.backbone_options.get("resize"), patch_topk=encoder.backbone_options.get("patch_topk"),
        solver=args.solver)
    config = {**vars(args), "name": name, "encoder": str(encoder_path), "data_file": str(data.path),
              **encoder.backbone_options}
    return fit_and_save("logistic_regression", name, args, model, features, monitor="val/acc", mode="max",
                        config=config)


def test_probe(final: Path, data: MedMNISTDataModule, features: FeatureDataModule, args) -> dict:
    """The head saved as `final`, on the test split of `features` (computed already when it was trained):
    common.evaluate.run_test's results."""
    head = build_from_checkpoint(linear_probe.LogisticRegressionModule, read_checkpoint(final), final.name,
                                 multilabel=data.multilabel, dataset=data.flag)
    return run_test(head, features, args)


if __name__ == "__main__":
    run_cli(main)
