"""Finetuning as a library: the classifier built from --init (a pretrained encoder, ImageNet weights, or none: the
supervised baseline), trained with all layers, saved, and its heat maps drawn (train.py is its command line)."""
from __future__ import annotations

import json
from pathlib import Path

from common.training import distributed
from common.cli.options import DataOptions, as_record, replace
from common.cli.parsers import new_network, size_suffix, subset_suffix
from common.data.datamodule import MedMNISTDataModule
from common.data.sources import short_name
from common.evaluation.report import report, run_test
from common.training.options import TrainerOptions
from common.training.trainer import check_output, fit_and_save
from downstream.resnet.explain import log_heatmaps
from downstream.resnet.hparams import FinetuneOptions
from downstream.resnet.module import FinetuneClassifier, finetuned
from models.checkpoints import load_encoder, load_weights
from models.imagenet import imagenet_encoder
from models.choices import IMAGENET
from utils import UserError, resolve_encoder, seed_everything


def init_checkpoint(options: FinetuneOptions) -> Path | str | None:
    """What --init names: a checkpoint (default pretrain-<dataset>[-<size>]), 'imagenet', or None for --init none."""
    init = (options.init or "").lower()
    if init == "none":
        return None
    if init == IMAGENET:
        if options.patch_topk is not None:
            raise UserError("--patch-topk: ImageNet weights are for ResNets, which have no patch tokens",
                            "leave --patch-topk out with --init imagenet")
        return IMAGENET
    if any(value is not None for value in (options.backbone, options.stem, options.resize, options.patch_topk)):
        raise UserError("--backbone, --stem, --resize and --patch-topk choose the network of --init none or imagenet only",
                        "the network of a pretrained encoder is the one its checkpoint records")
    return resolve_encoder(options.init or f"pretrain-{short_name(options.dataset)}{size_suffix(options.size)}",
                           "--init", also=("resnet",))


def network(options: FinetuneOptions, data: MedMNISTDataModule, init: Path | str | None):
    """(encoder options, pretrained encoder or None) for the classifier."""
    if init == IMAGENET:
        encoder = imagenet_encoder(options.backbone, data.num_channels, data.size, options.stem, options.resize,
                                   data.dims)
        return encoder.backbone_options, encoder
    if init is not None:
        encoder = load_encoder(init, "--init", data.num_channels, data.size, data.dims)
        return encoder.backbone_options, encoder
    return new_network(options.backbone, options.stem, data.num_channels, data.size, options.resize, data.dims,
                       options.patch_topk), None


def run_name(options: FinetuneOptions, init: Path | str | None) -> str:
    """--name, or <baseline|imagenet|downstream>-<dataset>[-<size>][-<subset>]."""
    kind = "baseline" if init is None else IMAGENET if init == IMAGENET else "downstream"
    subset = subset_suffix(options.samples, options.samples_per_class)
    return options.name or f"{kind}-{short_name(options.dataset)}{size_suffix(options.size)}{subset}"


def run(options: FinetuneOptions) -> Path:
    """train.py's run: the classifier from --init (or from scratch), finetuned and saved."""
    init = init_checkpoint(options)
    name = run_name(options, init)
    data = MedMNISTDataModule(options.dataset, options.size, options.data_dir, storage=options.data_storage,
                              samples=options.samples,
                              samples_per_class=options.samples_per_class, seed=options.seed)
    data.load().require_labels("finetuning")
    data.batch_size = min(options.batch_size, data.num_train())
    network_options, encoder = network(options, data, init)
    seed_everything(options.seed)
    model = FinetuneClassifier(**network_options, num_classes=data.num_classes, multilabel=data.multilabel,
                               dataset=options.dataset, lr=options.lr, max_epochs=options.epochs,
                               init=str(init) if init else None)
    if encoder is not None:
        load_weights(model.encoder, encoder.state_dict(), f"--init {getattr(init, 'name', init)}")
    check_output("resnet", name, options.overwrite, options.resume)
    # the file it was, should the name later mean another
    options = replace(options, init="none" if init is None else str(init))
    about = {**data.about(), "network": network_options}
    final = fit_and_save("resnet", name, TrainerOptions.of(options), as_record(options), model, data, monitor="val/acc",
                         mode="max", about=about)
    if distributed.rank() == 0:  # the grid of the final model on the validation split, also in TensorBoard
        record = json.loads(final.with_suffix(".config.json").read_text())
        log_heatmaps(final, data, record.get("tensorboard_dir"))
    return final


def test_finetuned(path: Path, ckpt: dict, data: MedMNISTDataModule, hardware: DataOptions) -> Path:
    """test.py's run: the classifier saved as `path` (its checkpoint `ckpt`) on `data`'s test split, on `hardware`'s
    accelerator; the metrics printed and written as <name>.test.json, whose path it returns."""
    model = finetuned(path, ckpt, data)
    results = run_test(model, data, hardware)
    return report(results, data.class_names, path, {"stage": "resnet", "dataset": data.flag,
                                                    "init": model.hparams.init})
