"""SimCLR pretraining on a MedMNIST dataset.

    python pretrain/simclr/train.py --dataset bloodmnist --epochs 100 --aug novel
"""
from __future__ import annotations

from common.augment import AUGMENTATIONS
from common.cli import train_parser
from common.data import MedMNISTDataModule
from common.trainer import check_output, fit_and_save
from models.checkpoints import expect_kind, load_weights, our_state_dict, read_checkpoint
from pretrain.simclr import module as simclr
from utils import UserError, resolve_checkpoint, run_cli, seed_everything

BATCH_SIZE = 256  # the study's: min(256, N)
EPOCHS = 100  # ours: the study left it to the command line


def parse_args(argv=None):
    parser = train_parser("SimCLR pretraining on MedMNIST.", epochs=EPOCHS, batch_size=None)
    parser.set_defaults(batch_size=None)
    parser.add_argument("--aug", default="novel", choices=AUGMENTATIONS, help="augmentation sequence")
    parser.add_argument("--lr", type=float, default=simclr.LR)
    parser.add_argument("--weight-decay", type=float, default=simclr.WEIGHT_DECAY)
    parser.add_argument("--temperature", type=float, default=simclr.TEMPERATURE)
    parser.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet34", "resnet50"])
    parser.add_argument("--init", default=None, help="SimCLR checkpoint (path or run name) to pretrain further")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    name = args.name or f"pretrain-{args.dataset}"
    data = MedMNISTDataModule(args.dataset, args.size, args.data_dir, batch_size=BATCH_SIZE, samples=args.samples,
                              seed=args.seed, drop_last=True)
    data.load()
    n_train = data.num_train()
    if args.batch_size is not None and args.batch_size > n_train:
        raise UserError(f"--batch-size {args.batch_size} is larger than the {n_train} training images",
                        f"use --batch-size {n_train} or less")
    data.batch_size = args.batch_size or min(BATCH_SIZE, n_train)
    seed_everything(args.seed)
    init = resolve_checkpoint(args.init, "simclr", "--init") if args.init else None
    model = simclr.SimCLRModule(
        arch=args.arch, in_channels=3, dataset=args.dataset, size=args.size, aug=args.aug, lr=args.lr,
        weight_decay=args.weight_decay, temperature=args.temperature, max_epochs=args.epochs, seed=args.seed,
        init=str(init) if init else None)
    if init:
        ckpt = read_checkpoint(init)
        expect_kind(ckpt, init, ("simclr",), "--init")
        load_weights(model, our_state_dict(ckpt), f"--init {init.name}")
    check_output("simclr", name, args.overwrite, args.resume)
    config = {**vars(args), "name": name, "batch_size": data.batch_size, "data_file": str(data.path)}
    fit_and_save("simclr", name, args, model, data, monitor="val/acc_top5", mode="max", config=config)


if __name__ == "__main__":
    run_cli(main)
