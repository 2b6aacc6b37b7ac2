"""The references beside every probe result: the same probe, on the same labels with the same settings, on
the raw pixels and on a random-init encoder of the same backbone. Without them a probe's AUROC says nothing
about what pretraining bought.

Each reference is trained once per data set and settings (as a checkpoint of this stage, named
reference-<dataset>-<encoder>-<digest of the settings>) and its test metrics are cached in
models/references/<dataset>.json; later tests of any head with those settings read them from there.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from common.data import MedMNISTDataModule
from common.features import FeatureDataModule
from downstream.logistic_regression import probe, train as probe_train
from models.pixels import PIXELS
from utils import atomic_write_text, models_dir

# what, besides the encoder, decides a probe's result: the options of train.py that its config records
SETTINGS = ("size", "solver", "epochs", "lr", "weight_decay", "batch_size", "samples", "samples_per_class", "seed")
DIGEST = 8  # hex digits of the settings in a reference's run name


def cache_file(dataset: str) -> Path:
    return models_dir("logistic_regression") / "references" / f"{dataset}.json"


def network_tag(options: dict) -> str:
    """A network's name in tables and run names, from its backbone options: resnet18-small-64px, small_cnn."""
    return (options["backbone"] + (f"-{options['stem']}" if options["stem"] else "")
            + (f"-{options['resize']}px" if options.get("resize") else "")
            + (f"-top{options['patch_topk']}" if options.get("patch_topk") else ""))


def network_argv(options: dict) -> list[str]:
    """train.py's options that build the network of `options` from scratch."""
    return ["--backbone", options["backbone"], *(["--stem", options["stem"]] if options["stem"] else []),
            *(["--resize", str(options["resize"])] if options.get("resize") else []),
            *(["--patch-topk", str(options["patch_topk"])] if options.get("patch_topk") else [])]


def reference_argv(options: dict, data: MedMNISTDataModule) -> list[str]:
    """train.py's options for a reference probe with the head's settings (as its config records them)."""
    argv = ["--dataset", data.flag, "--data-dir", str(data.path.parent), "--overwrite"]
    for key in SETTINGS:
        if options.get(key) is not None:
            argv += [f"--{key.replace('_', '-')}", str(options[key])]
    return argv


def references(options: dict, data: MedMNISTDataModule, network: dict, args, log: Path) -> dict[str, dict]:
    """{reference: {"acc", "auroc", "checkpoint"}} for the raw pixels and a random-init `network` (backbone
    options: backbone, stem, resize),
    each probed with the head's `options` (train.py's, from its config); trained on the first call for these
    settings (their output appended to `log`), read from the cache after."""
    settings = {key: options.get(key) for key in SETTINGS}
    cache = cache_file(data.flag)
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    results = {}
    for tag, encoder_argv in ((f"random-{network_tag(network)}", ["--encoder", probe.RANDOM,
                                                                   *network_argv(network)]),
                              (PIXELS, ["--encoder", PIXELS])):
        key = json.dumps({**settings, "encoder": tag}, sort_keys=True)
        if key not in cached:
            name = f"reference-{data.flag}-{tag}-{hashlib.md5(key.encode()).hexdigest()[:DIGEST]}"
            with open(log, "a") as handle, redirect_stdout(handle), redirect_stderr(handle):
                train_args = probe_train.parse_args([*reference_argv(options, data), *encoder_argv, "--name", name])
                encoder, path = probe.frozen_encoder(train_args.encoder, data, train_args.seed,
                                                           train_args.backbone, train_args.stem, train_args.resize)
                subset = data.subset(train_args.samples, train_args.samples_per_class, train_args.seed)
                features = FeatureDataModule(subset, encoder)  # every split, the test one included, encoded once
                final = probe.train_probe(train_args, subset, encoder, path, features)
                metrics = probe.test_probe(final, subset, features, args)
            cached[key] = {"acc": metrics["acc"], "auroc": metrics["auroc"], "checkpoint": str(final)}
            atomic_write_text(cache, json.dumps(cached, indent=2) + "\n")
        results[tag] = cached[key]
    return results
