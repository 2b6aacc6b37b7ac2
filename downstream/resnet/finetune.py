"""Finetuning as a library: the classifier built from --init (a pretrained encoder, ImageNet weights, or none: the
supervised baseline), trained with all layers, saved, and its heat maps drawn (train.py is its command line)."""
from __future__ import annotations

import json
from pathlib import Path

from common.training import distributed
from common.cli.parsers import new_network, size_suffix, subset_suffix
from common.data.datamodule import MedMNISTDataModule
from common.data.sources import short_name
from common.training.options import TrainerOptions
from common.training.trainer import check_output, fit_and_save
from downstream.resnet.explain import log_heatmaps
from downstream.resnet.module import FinetuneClassifier
from models.checkpoints import load_encoder, load_weights
from models.imagenet import imagenet_encoder
from models.choices import IMAGENET
from utils import UserError, resolve_encoder, seed_everything


def init_checkpoint(args) -> Path | str | None:
    """What --init names: a checkpoint (default pretrain-<dataset>[-<size>]), 'imagenet', or None for --init none."""
    init = (args.init or "").lower()
    if init == "none":
        return None
    if init == IMAGENET:
        if args.patch_topk is not None:
            raise UserError("--patch-topk: ImageNet weights are for ResNets, which have no patch tokens",
                            "leave --patch-topk out with --init imagenet")
        return IMAGENET
    if args.backbone is not None or args.stem is not None or args.resize is not None or args.patch_topk is not None:
        raise UserError("--backbone, --stem, --resize and --patch-topk choose the network of --init none or imagenet only",
                        "the network of a pretrained encoder is the one its checkpoint records")
    return resolve_encoder(args.init or f"pretrain-{short_name(args.dataset)}{size_suffix(args.size)}", "--init",
                           also=("resnet",))


def network(args, data: MedMNISTDataModule, init: Path | str | None):
    """(encoder options, pretrained encoder or None) for the classifier."""
    if init == IMAGENET:
        encoder = imagenet_encoder(args.backbone, data.num_channels, data.size, args.stem, args.resize, data.dims)
        return encoder.backbone_options, encoder
    if init is not None:
        encoder = load_encoder(init, "--init", data.num_channels, data.size, data.dims)
        return encoder.backbone_options, encoder
    return new_network(args.backbone, args.stem, data.num_channels, data.size, args.resize, data.dims,
                       args.patch_topk), None


def run_name(args, init: Path | str | None) -> str:
    """--name, or <baseline|imagenet|downstream>-<dataset>[-<size>][-<subset>]."""
    kind = "baseline" if init is None else IMAGENET if init == IMAGENET else "downstream"
    return args.name or f"{kind}-{short_name(args.dataset)}{size_suffix(args.size)}{subset_suffix(args)}"


def run(args) -> Path:
    """train.py's run: the classifier from --init (or from scratch), finetuned and saved."""
    init = init_checkpoint(args)
    name = run_name(args, init)
    data = MedMNISTDataModule(args.dataset, args.size, args.data_dir, storage=args.data_storage, samples=args.samples,
                              samples_per_class=args.samples_per_class, seed=args.seed)
    data.load().require_labels("finetuning")
    data.batch_size = min(args.batch_size, data.num_train())
    options, encoder = network(args, data, init)
    seed_everything(args.seed)
    model = FinetuneClassifier(**options, num_classes=data.num_classes, multilabel=data.multilabel,
                               dataset=args.dataset, lr=args.lr, max_epochs=args.epochs,
                               init=str(init) if init else None)
    if encoder is not None:
        load_weights(model.encoder, encoder.state_dict(), f"--init {getattr(init, 'name', init)}")
    check_output("resnet", name, args.overwrite, args.resume)
    args.init = "none" if init is None else str(init)  # the file it was, should the name later mean another
    about = {**data.about(), "network": options}
    final = fit_and_save("resnet", name, TrainerOptions.from_args(args), vars(args), model, data, monitor="val/acc",
                         mode="max", about=about)
    if distributed.rank() == 0:  # the grid of the final model on the validation split, also in TensorBoard
        record = json.loads(final.with_suffix(".config.json").read_text())
        log_heatmaps(final, data, record.get("tensorboard_dir"))
    return final
