"""The command-line options every stage shares, and their checks (one-line errors, exit code 2)."""
from __future__ import annotations

import argparse
import sys

from common.storage import IN_MEMORY_BYTES, STORAGES
from utils import UserError

DEFAULT_SIZE = 28  # MedMNIST's original image size
DEFAULT_DATASET = "bloodmnist"  # the study's first example


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
    parser.add_argument("--dataset", default=DEFAULT_DATASET,
                        help="MedMNIST flag, e.g. bloodmnist, breastmnist, or a 3D one: adrenalmnist3d, organmnist3d")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help="image size: 28, 64, 128 or 224 (3D data sets: 28 or 64 voxels per side)")
    parser.add_argument("--data-dir", default=None, help="folder with the MedMNIST npz files (default ~/.medmnist)")
    parser.add_argument("--data-storage", default="auto", choices=STORAGES,
                        help="memory: read the npz into RAM; mmap: decode it once into an uncompressed cache beside it "
                             "and memory-map that (for sets larger than RAM); auto: mmap above "
                             f"{IN_MEMORY_BYTES / 2**30:.0f} GiB of images")
    parser.add_argument("--seed", type=int, default=0, help="seeds Python, NumPy, torch and the augmentation")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu, auto, ...")
    parser.add_argument("--devices", default="auto", help="devices per node (GPUs, or CPU processes), or auto")
    parser.add_argument("--num-nodes", type=positive_int, default=1,
                        help="machines of a multi-node run (SLURM, torchrun): --devices on each")
    parser.add_argument("--precision", default="32-true",
                        help="32-true, 16-mixed or bf16-mixed (bf16 only on hardware that supports it)")
    return parser


def train_parser(description: str, epochs: int, batch_size: int,
                 validate: tuple[tuple[str, ...], int, str] | None = None) -> Parser:
    """data_parser plus what every training run takes. `validate`: (option names, default, help) of the
    validation frequency (--val-every 1 unless given)."""
    parser = data_parser(description)
    parser.add_argument("--epochs", type=positive_int, default=epochs)
    parser.add_argument("--batch-size", type=positive_int, default=batch_size,
                        help="capped at the number of training images")
    parser.add_argument("--samples", type=int, default=None, help="train on N random training images")
    parser.add_argument("--name", default=None, help="run name: the model is saved as models/<name>.ckpt")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing models/<name>.ckpt")
    options, default, what = validate or (("--val-every",), 1, "validate every N epochs")
    parser.add_argument(*options, dest="val_every", type=positive_int, default=default, help=what)
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


def size_suffix(size: int) -> str:
    """Default run names carry the image size when it is not MedMNIST's original 28 (pretrain-<flag>-64), so runs
    of one data set at two sizes keep apart, and each stage finds the encoder of its own size."""
    return "" if size == DEFAULT_SIZE else f"-{size}"


def devices_value(text: str):
    return int(text) if text.isdigit() else text


def add_backbone_options(parser: Parser, when: str) -> None:
    """--backbone and --stem: the network built from scratch (`when` says when that is)."""
    from models.backbones import BACKBONES, DEFAULT_BACKBONE, DEFAULT_BACKBONE_3D
    from models.resnet import STEMS

    parser.add_argument("--backbone", default=None, choices=list(BACKBONES),
                        help=f"encoder network {when} (default {DEFAULT_BACKBONE}; {DEFAULT_BACKBONE_3D} on 3D data sets)")
    parser.add_argument("--stem", default=None, choices=list(STEMS),
                        help=f"ResNet stem {when}: imagenet (7x7 stride 2 + max-pool, the study's; the default) or "
                             "small (3x3 stride 1, no max-pool: for 28-64 px images, several times the compute); "
                             "3D ResNets: the same in 3D")
    parser.add_argument("--resize", type=positive_int, default=None,
                        help=f"upsample every image to N px on the device before the network {when} (e.g. 28 -> 64, "
                             "bilinear; --size picks the stored resolution instead)")
    parser.add_argument("--patch-topk", type=positive_int, default=None, metavar="K",
                        help=f"ViTs {when}: the top-K patch head (models/topk_pool.py): the embedding is the "
                             "softmax-weighted mean of the K patch tokens a learned score ranks highest, and the scores "
                             "are a heat map (default: the class token)")


def checked_stem(backbone: str, stem: str | None) -> str | None:
    """--stem for `backbone`: its default when not given, a one-line error for a stem it does not have."""
    from models.backbones import check_stem

    try:
        return check_stem(backbone, stem)
    except ValueError as err:
        raise UserError(f"--stem {stem}: {err}", "leave --stem out for this backbone") from None


def new_network(backbone: str | None, stem: str | None, channels: int, size: int, resize: int | None = None,
                dims: int = 2, patch_topk: int | None = None) -> dict:
    """The build_backbone options of a network built from scratch: --backbone (default the study's ResNet-18, or
    its 3D twin for volumes, `dims` 3), --stem and --resize, the dataset's channels and image size."""
    from models.backbones import BACKBONES, check_patch_topk, default_backbone

    backbone = backbone or default_backbone(dims)
    if BACKBONES[backbone].dims != dims:
        kind = {2: "2D images", 3: "3D volumes"}
        fitting = [name for name, entry in BACKBONES.items() if entry.dims == dims]
        raise UserError(f"--backbone {backbone} reads {kind[BACKBONES[backbone].dims]} but the data set holds {kind[dims]}",
                        f"choose one of {', '.join(fitting)}")
    try:
        check_patch_topk(backbone, patch_topk, resize or size)
    except ValueError as err:
        raise UserError(f"--patch-topk {patch_topk}: {err}",
                        "use a ViT (--backbone vit_tiny or vit_small)" if "no patch tokens" in str(err)
                        else "choose a smaller K") from None
    return {"backbone": backbone, "stem": checked_stem(backbone, stem), "in_channels": channels, "size": size,
            "resize": resize, "patch_topk": patch_topk}
