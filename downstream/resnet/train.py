"""ResNet finetuning from a SimCLR encoder, or (--init none) the supervised baseline from scratch.

    python downstream/resnet/train.py                      # finetunes pretrain-bloodmnist
    python downstream/resnet/train.py --init none          # supervised baseline
"""
from __future__ import annotations

from pathlib import Path

from common.cli import add_samples_per_class, check_subset_options, subset_suffix, train_parser
from common.data import MedMNISTDataModule
from common.trainer import check_output, fit_and_save
from downstream.resnet import module as resnet
from models.checkpoints import load_weights, load_encoder
from utils import resolve_checkpoint, run_cli, seed_everything

BATCH_SIZE = 128  # the study's: min(128, N)
EPOCHS = 100


def parse_args(argv=None):
    parser = train_parser("Finetune a ResNet (all layers) or train the supervised baseline.",
                          epochs=EPOCHS, batch_size=BATCH_SIZE)
    add_samples_per_class(parser)
    parser.add_argument("--init", default=None,
                        help="SimCLR or finetuned checkpoint (path or run name), or 'none' for random "
                             "initialisation (the baseline); default pretrain-<dataset>")
    parser.add_argument("--lr", type=float, default=resnet.LR, help="Adam learning rate")
    parser.add_argument("--arch", default="resnet18", help="architecture when --init none")
    return parser.parse_args(argv)


def init_checkpoint(args) -> Path | None:
    """The checkpoint named by --init (default pretrain-<dataset>), or None for --init none."""
    if (args.init or "").lower() == "none":
        return None
    return resolve_checkpoint(args.init or f"pretrain-{args.dataset}", "simclr", "--init")


def build_model(args, data: MedMNISTDataModule, path: Path | None):
    """A classifier whose encoder comes from checkpoint `path` (random when None)."""
    encoder, hparams = (load_encoder(path, "--init", data.num_channels) if path
                        else (None, {"arch": args.arch, "in_channels": 3}))
    model = resnet.ResNetClassifier(
        arch=hparams.get("arch", "resnet18"), in_channels=hparams.get("in_channels", 3),
        num_classes=data.num_classes, multilabel=data.multilabel, dataset=args.dataset, lr=args.lr,
        max_epochs=args.epochs, init=str(path) if path else None)
    if encoder is not None:
        load_weights(model.encoder, encoder.state_dict(), f"--init {path.name}")
    return model


def main(argv=None):
    args = parse_args(argv)
    check_subset_options(args)
    path = init_checkpoint(args)
    name = args.name or f"{'baseline' if path is None else 'downstream'}-{args.dataset}{subset_suffix(args)}"
    data = MedMNISTDataModule(args.dataset, args.size, args.data_dir, samples=args.samples,
                              samples_per_class=args.samples_per_class, seed=args.seed)
    data.load()
    data.batch_size = min(args.batch_size, data.num_train())
    seed_everything(args.seed)
    model = build_model(args, data, path)
    check_output("resnet", name, args.overwrite, args.resume)
    config = {**vars(args), "name": name, "init": model.hparams.init, "data_file": str(data.path)}
    fit_and_save("resnet", name, args, model, data, monitor="val/acc", mode="max", config=config)


if __name__ == "__main__":
    run_cli(main)
