"""The logistic-regression stage as a library: the frozen encoder --encoder names, and the probe trained and tested
on its features (train.py is its command line; references.py and scripts/label_efficiency.py call it too)."""
from __future__ import annotations

from pathlib import Path

import torch

from common.evaluation import linear_probe
from common.cli.options import DataOptions, as_record, replace
from common.cli.parsers import new_network, size_suffix, subset_suffix
from common.data.datamodule import MedMNISTDataModule
from common.data.sources import describe
from common.evaluation.report import run_test
from common.evaluation.features import FeatureDataModule, feature_device
from common.training.options import TrainerOptions
from common.training.trainer import check_output, file_md5, fit_and_save
from downstream.logistic_regression.options import ProbeOptions
from models.backbones import build_backbone
from models.checkpoints import build_from_checkpoint, load_encoder, read_checkpoint
from downstream.logistic_regression.strongest import best_features, encode_network_candidates, tried_text
from models.feature_choice import BEST, LAST
from models.imagenet import imagenet_encoder
from models.choices import IMAGENET, PIXELS, RANDOM
from models.pixels import RawPixels
from models.stages import read_features
from utils import UserError, resolve_encoder, seed_everything

REFERENCES = (RANDOM, PIXELS, IMAGENET)  # --encoder values that name no checkpoint of ours
_POOLED_NOTED: set[str] = set()  # the data sets whose pooled pixel reference has been noted in this process


def frozen_encoder(reference: str, data: MedMNISTDataModule, seed: int = 0, backbone: str | None = None,
                   stem: str | None = None, resize: int | None = None, patch_topk: int | None = None):
    """The encoder named by --encoder (path, run name, 'random' or 'pixels'), frozen, and its path (or the
    reference's name)."""
    network_given = backbone is not None or stem is not None or resize is not None or patch_topk is not None
    if reference == PIXELS and not network_given:
        pixels = RawPixels(data.num_channels, data.size, data.dims)
        if pixels.pool > 1 and data.flag not in _POOLED_NOTED:  # once per data set and process
            _POOLED_NOTED.add(data.flag)
            print(f"note: {describe(data.source)} has {data.num_channels * data.size ** data.dims:,} values per "
                  f"image; the pixel reference reads {pixels.describe()}")
        return pixels, PIXELS
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


def probe_features(encoder, features: str | None):
    """The frozen `encoder` read at `features` (models.feature_choice); None: what the encoder's pretraining
    recorded (its recipe's --features), else its last layer."""
    return read_features(encoder, features or getattr(encoder, "recorded_features", None) or LAST)


def run(options: ProbeOptions) -> Path:
    """train.py's run: the encoder --encoder names, frozen, read at --features, and the probe on its features."""
    data = MedMNISTDataModule(options.dataset, options.size, options.data_dir, storage=options.data_storage,
                              samples=options.samples,
                              samples_per_class=options.samples_per_class, seed=options.seed)
    data.load().require_labels("the logistic-regression probe")
    reference = options.encoder or f"pretrain-{data.flag}{size_suffix(options.size)}"
    encoder, encoder_path = frozen_encoder(reference, data, options.seed, options.backbone, options.stem,
                                           options.resize, options.patch_topk)
    if options.features == BEST:
        options = replace(options, features=chosen_features(encoder, data, options.accelerator))
    encoder = probe_features(encoder, options.features)
    return train_probe(options, data, encoder, encoder_path, FeatureDataModule(data, encoder))


def chosen_features(encoder, data: MedMNISTDataModule, accelerator: str) -> str:
    """--features best: the encoder's candidate that scores best on val (strongest.best_features), printed with
    what every candidate scored."""
    encoded = encode_network_candidates(encoder, data.splits, feature_device(accelerator))
    choice = best_features(encoded, data.num_classes, data.multilabel)
    print(f"--features best: {choice.features} (val AUROC of each: {tried_text(choice)})")
    return choice.features


def train_probe(options: ProbeOptions, data: MedMNISTDataModule, encoder, encoder_path,
                features: FeatureDataModule) -> Path:
    """Train the head on `features` (of `data`'s splits through the frozen `encoder`, a models.stages reader or the
    network itself: computed in its setup, or handed in already computed) and save it as `<name>.ckpt`, as every
    run of this stage. The head records which features it read."""
    subset = subset_suffix(options.samples, options.samples_per_class)
    name = options.name or f"downstream-{data.flag}{size_suffix(options.size)}{subset}"
    check_output("logistic_regression", name, options.overwrite, options.resume)
    if options.solver == "lbfgs":
        options = replace(options, epochs=1)  # the whole fit, every strength of the grid, is one epoch
    seed_everything(options.seed)
    model = linear_probe.LogisticRegressionModule(
        feature_dim=encoder.feature_dim, num_classes=data.num_classes, multilabel=data.multilabel,
        dataset=options.dataset, lr=options.lr, weight_decay=options.weight_decay, max_epochs=options.epochs,
        encoder=str(encoder_path), encoder_md5=None if encoder_path in REFERENCES else file_md5(encoder_path),
        seed=options.seed, batch_size=min(options.batch_size, data.num_train()),
        backbone=encoder.backbone_options["backbone"], stem=encoder.backbone_options["stem"],
        resize=encoder.backbone_options.get("resize"), patch_topk=encoder.backbone_options.get("patch_topk"),
        solver=options.solver, features=getattr(encoder, "features_read", LAST))
    # the file it was, should the name later mean another; the features as it read them (the default resolved)
    options = replace(options, encoder=str(encoder_path), features=model.hparams.features)
    about = {**data.about(), "network": encoder.backbone_options}
    return fit_and_save("logistic_regression", name, TrainerOptions.of(options), as_record(options), model, features,
                        monitor="val/acc", mode="max", about=about)


def test_probe(final: Path, data: MedMNISTDataModule, features: FeatureDataModule, hardware: DataOptions) -> dict:
    """The head saved as `final`, on the test split of `features` (computed already when it was trained):
    common.evaluation.report.run_test's results."""
    head = build_from_checkpoint(linear_probe.LogisticRegressionModule, read_checkpoint(final), final.name,
                                 multilabel=data.multilabel, dataset=data.flag)
    return run_test(head, features, hardware)
