"""The command-line options every stage shares, and their checks (one-line errors, exit code 2)."""
from __future__ import annotations

import argparse
import sys

from utils import UserError


class Parser(argparse.ArgumentParser):
    """argparse with a one-line `error: ...` instead of a usage dump."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def data_parser(description: str) -> Parser:
    """Options naming the data: dataset flag, image size, folder, seed, hardware."""
    parser = Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="bloodmnist", help="MedMNIST 2D flag, e.g. bloodmnist, breastmnist")
    parser.add_argument("--size", type=int, default=28, help="image size: 28, 64, 128 or 224")
    parser.add_argument("--data-dir", default=None, help="folder with the MedMNIST npz files (default ~/.medmnist)")
    parser.add_argument("--seed", type=int, default=0, help="seeds Python, NumPy, torch and the augmentation")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu, auto, ...")
    parser.add_argument("--devices", default="auto", help="number of devices, or auto")
    parser.add_argument("--precision", default="32-true",
                        help="32-true, 16-mixed or bf16-mixed (bf16 only on hardware that supports it)")
    return parser


def train_parser(description: str, epochs: int, batch_size: int) -> Parser:
    """data_parser plus what every training run takes."""
    parser = data_parser(description)
    parser.add_argument("--epochs", type=positive_int, default=epochs)
    parser.add_argument("--batch-size", type=positive_int, default=batch_size,
                        help="capped at the number of training images")
    parser.add_argument("--samples", type=int, default=None, help="train on N random training images")
    parser.add_argument("--name", default=None, help="run name: the model is saved as models/<name>.ckpt")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing models/<name>.ckpt")
    parser.add_argument("--val-every", type=positive_int, default=1, help="validate every N epochs")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run --name from its last checkpoint (same options)")
    parser.add_argument("--checkpoint-every-n-steps", type=positive_int, default=None,
                        help="also save last.ckpt every N optimiser steps (it is always saved every epoch)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder (GPU; first steps slower)")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic algorithms only (cuDNN too): reproducible on GPU, slower")
    return parser


def add_samples_per_class(parser: Parser) -> None:
    parser.add_argument("--samples-per-class", type=int, default=None,
                        help="train on N random images of every class (balanced)")


def check_subset_options(args: argparse.Namespace) -> None:
    if args.samples is not None and getattr(args, "samples_per_class", None) is not None:
        raise UserError("--samples and --samples-per-class exclude each other", "give only one")
    if args.samples is not None and args.samples <= 0:
        raise UserError(f"--samples must be positive, got {args.samples}", "give a number of training images")


def subset_suffix(args: argparse.Namespace) -> str:
    """The study's naming: -<N>-samples or -<N>-spc appended to a run name."""
    if args.samples is not None:
        return f"-{args.samples}-samples"
    if getattr(args, "samples_per_class", None) is not None:
        return f"-{args.samples_per_class}-spc"
    return ""


def devices_value(text: str):
    return int(text) if text.isdigit() else text
