"""Finetuning from a pretrained encoder (any method), or (--init none) the supervised baseline from scratch.

    python downstream/resnet/train.py                      # finetunes pretrain-bloodmnist
    python downstream/resnet/train.py --init none          # supervised baseline
    python downstream/resnet/train.py --init none --backbone resnet18 --stem small
"""
from __future__ import annotations

from pathlib import Path

from common.cli import (add_backbone_options, add_samples_per_class, check_subset_options, new_network, size_suffix,
                        subset_suffix, train_parser)
from common.data import MedMNISTDataModule
from common.trainer import check_output, fit_and_save
from downstream.resnet import module as finetune
from models.checkpoints import load_encoder, load_weights
from utils import UserError, resolve_encoder, run_cli, seed_everything

BATCH_SIZE = 128  # the study's: min(128, N)
EPOCHS = 100


def parse_args(argv=None):
    parser = train_parser("Finetune an encoder with a linear head (all layers), or train the supervised baseline.",
                          epochs=EPOCHS, batch_size=BATCH_SIZE)
    add_samples_per_class(parser)
    parser.add_argument("--init", default=None,
                        help="pretrained encoder (any method) or finetuned checkpoint, path or run name, or 'none' "
                             "for random initialisation (the baseline); default pretrain-<dataset> (-<size> when not 28)")
    add_backbone_options(parser, "with --init none")
    parser.add_argument("--lr", type=float, default=finetune.LR, help="Adam learning rate")
    return parser.parse_args(argv)


def init_checkpoint(args) -> Path | None:
    """The checkpoint named by --init (default pretrain-<dataset>[-<size>]), or None for --init none."""
    if (args.init or "").lower() == "none":
        return None
    if args.backbone is not None or args.stem is not None or args.resize is not None:
        raise UserError("--backbone, --stem and --resize choose the network of --init none only",
                        "the network of a pretrained encoder is the one its checkpoint records")
    return resolve_encoder(args.init or f"pretrain-{args.dataset}{size_suffix(args.size)}", "--init", also=("resnet",))


def network(args, data: MedMNISTDataModule, path: Path | None):
    """(encoder options, pretrained encoder or None) for the classifier."""
    if path is not None:
        encoder = load_encoder(path, "--init", data.num_channels, data.size, data.dims)
        return encoder.backbone_options, encoder
    return new_network(args.backbone, args.stem, data.num_channels, data.size, args.resize, data.dims), None


def main(argv=None):
    args = parse_args(argv)
    check_subset_options(args)
    path = init_checkpoint(args)
    name = args.name or f"{'baseline' if path is None else 'downstream'}-{args.dataset}{size_suffix(args.size)}{subset_suffix(args)}"
    data = MedMNISTDataModule(args.dataset, args.size, args.data_dir, storage=args.data_storage, samples=args.samples,
                              samples_per_class=args.samples_per_class, seed=args.seed)
    data.load()
    data.batch_size = min(args.batch_size, data.num_train())
    options, encoder = network(args, data, path)
    seed_everything(args.seed)
    model = finetune.FinetuneClassifier(**options, num_classes=data.num_classes, multilabel=data.multilabel,
                                        dataset=args.dataset, lr=args.lr, max_epochs=args.epochs,
                                        init=str(path) if path else None)
    if encoder is not None:
        load_weights(model.encoder, encoder.state_dict(), f"--init {path.name}")
    check_output("resnet", name, args.overwrite, args.resume)
    config = {**vars(args), "name": name, "init": model.hparams.init, "data_file": str(data.path), **options}
    return fit_and_save("resnet", name, args, model, data, monitor="val/acc", mode="max", config=config)


if __name__ == "__main__":
    run_cli(main)
