"""Logistic regression on frozen encoder features (computed once, in eval mode, without gradients).

    python downstream/logistic_regression/train.py --dataset bloodmnist --encoder pretrain-bloodmnist
"""
from __future__ import annotations

import torch

from common.cli import add_samples_per_class, check_subset_options, subset_suffix, train_parser
from common.data import MedMNISTDataModule
from common.features import FeatureDataModule
from common.trainer import check_output, file_md5, fit_and_save
from downstream.logistic_regression import module as logreg
from models import ResNetEncoder
from models.checkpoints import load_encoder
from utils import resolve_checkpoint, run_cli, seed_everything


def parse_args(argv=None):
    parser = train_parser("Logistic regression on frozen encoder features.", epochs=logreg.EPOCHS,
                          batch_size=logreg.BATCH_SIZE)
    add_samples_per_class(parser)
    parser.add_argument("--encoder", default=None,
                        help="SimCLR (or finetuned) checkpoint, path or run name, or 'random' for a randomly "
                             "initialised encoder; default pretrain-<dataset>")
    parser.add_argument("--lr", type=float, default=logreg.LR)
    parser.add_argument("--weight-decay", type=float, default=logreg.WEIGHT_DECAY)
    return parser.parse_args(argv)


RANDOM = "random"  # --encoder random: a randomly initialised ResNet-18 (seeded), the no-pretraining reference


def frozen_encoder(reference: str, data: MedMNISTDataModule, seed: int = 0):
    """The encoder named by --encoder (path, run name, or 'random'), frozen, and its path (or 'random')."""
    if reference == RANDOM:
        torch.manual_seed(seed)
        return ResNetEncoder().requires_grad_(False), RANDOM
    path = resolve_checkpoint(reference, "simclr", "--encoder")
    encoder, _ = load_encoder(path, "--encoder", data.num_channels)
    return encoder.requires_grad_(False), path


def main(argv=None):
    args = parse_args(argv)
    check_subset_options(args)
    name = args.name or f"downstream-{args.dataset}{subset_suffix(args)}"
    data = MedMNISTDataModule(args.dataset, args.size, args.data_dir, samples=args.samples,
                              samples_per_class=args.samples_per_class, seed=args.seed)
    data.load()
    encoder, encoder_path = frozen_encoder(args.encoder or f"pretrain-{args.dataset}", data, args.seed)
    check_output("logistic_regression", name, args.overwrite, args.resume)
    seed_everything(args.seed)
    model = logreg.LogisticRegressionModule(
        feature_dim=encoder.feature_dim, num_classes=data.num_classes, multilabel=data.multilabel,
        dataset=args.dataset, lr=args.lr, weight_decay=args.weight_decay, max_epochs=args.epochs,
        encoder=str(encoder_path), encoder_md5=None if encoder_path == RANDOM else file_md5(encoder_path),
        seed=args.seed, batch_size=min(args.batch_size, data.num_train()))
    features = FeatureDataModule(data, encoder)
    config = {**vars(args), "name": name, "encoder": str(encoder_path), "data_file": str(data.path)}
    fit_and_save("logistic_regression", name, args, model, features, monitor="val/acc", mode="max", config=config)


if __name__ == "__main__":
    run_cli(main)
