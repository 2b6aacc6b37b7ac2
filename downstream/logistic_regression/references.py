"""The references beside every probe result: the same probe, on the same labels with the same settings, on
the raw pixels, on a random-init encoder of the same backbone (its last layer), and on the strongest untrained
features (strongest.py: random-init stages of the same backbone and of the small CNN, chosen on val). Without them
a probe's AUROC says nothing about what pretraining bought.

Each reference is trained once per data file (its md5), data set and settings (as a checkpoint of this stage,
named reference-<dataset>-<encoder>-<digest of the settings>) and its test metrics are cached in
models/references/<dataset>.json; later tests of any head with those settings read them from there. When the data
file under a cached entry has changed (another md5 at the same path: a replaced npz, a rebuilt folder cache), its
entries and their checkpoints are dropped, with a one-line note.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from common.cli.options import DataOptions
from common.data.datamodule import MedMNISTDataModule
from common.evaluation.features import FeatureDataModule, feature_device
from common.training.trainer import file_md5
from downstream.logistic_regression import probe, train as probe_train
from downstream.logistic_regression.strongest import TAG, choose, encode_candidates, untrained_networks
from models.feature_choice import LAST
from models.pixels import PIXELS
from utils import (atomic_write_text, models_dir)

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


def network_values(options: dict) -> dict:
    """The stages' options that build the network of `options` (backbone options) from scratch."""
    return {"backbone": options["backbone"], "stem": options["stem"], "resize": options.get("resize") or None,
            "patch_topk": options.get("patch_topk") or None}


def reference_values(options: dict, data: MedMNISTDataModule) -> dict:
    """train.py's options for a reference probe with the head's settings (as its config records them)."""
    return {**data.source.values(), "overwrite": True,
            **{key: options[key] for key in SETTINGS if options.get(key) is not None}}


def references(options: dict, data: MedMNISTDataModule, network: dict, hardware: DataOptions,
               log: Path) -> dict[str, dict]:
    """{reference: {"acc", "auroc", "checkpoint"}} for the raw pixels, a random-init `network` (backbone
    options: backbone, stem, resize) and the strongest untrained features (with "chosen": what was chosen on val),
    each probed with the head's `options` (train.py's, from its config); trained on the first call for these
    settings and this data file (their output appended to `log`), read from the cache after; the features computed
    on `hardware`'s accelerator."""
    data_file = str(Path(data.about()["data_file"]).resolve())
    settings = {**{key: options.get(key) for key in SETTINGS}, "data_md5": file_md5(data_file)}
    cache = cache_file(data.flag)
    cached = drop_stale(json.loads(cache.read_text()) if cache.is_file() else {}, data_file, settings["data_md5"],
                        cache)
    untrained = untrained_networks(network, data)
    rows = ((f"random-{network_tag(network)}", lambda: ({"encoder": probe.RANDOM, **network_values(network),
                                                         "features": LAST}, None)),
            (PIXELS, lambda: ({"encoder": PIXELS}, None)),
            (TAG, lambda: strongest(untrained, settings, data, hardware)))  # each: (train.py's options, chosen)
    results = {}
    for tag, encoder_values in rows:
        described = tag if tag != TAG else f"{TAG}:" + ",".join(network_tag(n) for n in untrained)
        key = json.dumps({**settings, "encoder": described}, sort_keys=True)
        if key not in cached:
            name = f"reference-{data.flag}-{tag}-{hashlib.md5(key.encode()).hexdigest()[:DIGEST]}"
            with open(log, "a") as handle, redirect_stdout(handle), redirect_stderr(handle):
                values, chosen = encoder_values()
                run = probe_train.options(**{**reference_values(options, data), **values, "name": name})
                encoder, path = probe.frozen_encoder(run.encoder, data, run.seed, run.backbone, run.stem, run.resize)
                encoder = probe.probe_features(encoder, run.features)
                subset = data.subset(run.samples, run.samples_per_class, run.seed)
                features = FeatureDataModule(subset, encoder)  # every split, the test one included, encoded once
                final = probe.train_probe(run, subset, encoder, path, features)
                metrics = probe.test_probe(final, subset, features, hardware)
            cached[key] = {"acc": metrics["acc"], "auroc": metrics["auroc"], "checkpoint": str(final),
                           "data_file": data_file, **({"chosen": chosen} if chosen else {})}
            atomic_write_text(cache, json.dumps(cached, indent=2) + "\n")
        results[tag] = cached[key]
    return results


def drop_stale(cached: dict, data_file: str, md5: str, cache: Path) -> dict:
    """`cached` without the entries computed on an earlier version of `data_file` (same path, another md5), whose
    checkpoints are deleted; the cache file is rewritten and a note printed when any was dropped. Entries of other
    files (another folder of the same name) stay."""
    stale = {key: entry for key, entry in cached.items()
             if entry.get("data_file") == data_file and json.loads(key).get("data_md5") != md5}
    if not stale:
        return cached
    for entry in stale.values():
        checkpoint = Path(entry["checkpoint"])
        if checkpoint.name.startswith("reference-") and checkpoint.parent == models_dir("logistic_regression"):
            checkpoint.unlink(missing_ok=True)
            checkpoint.with_suffix(".config.json").unlink(missing_ok=True)
    kept = {key: entry for key, entry in cached.items() if key not in stale}
    atomic_write_text(cache, json.dumps(kept, indent=2) + "\n")
    old = sorted({json.loads(key).get("data_md5", "?")[:8] for key in stale})
    print(f"note: dropped {len(stale)} cached reference result(s): {data_file} has changed since they were computed "
          f"(md5 {', '.join(old)}, now {md5[:8]}); computing them again")
    return kept


def strongest(untrained: list[dict], settings: dict, data: MedMNISTDataModule,
              hardware: DataOptions) -> tuple[dict, dict]:
    """train.py's encoder options of the strongest untrained features for the head's labelled images (chosen on
    their train and val features only), and what was chosen."""
    subset = data.subset(settings["samples"], settings["samples_per_class"], settings["seed"] or 0)
    device = feature_device(hardware.accelerator)
    networks = {network_tag(n): n for n in untrained}
    encoded = {tag: encode_candidates(n, settings["seed"] or 0, subset.splits, device) for tag, n in networks.items()}
    choice = choose(encoded, networks, data.num_classes, data.multilabel)
    chosen = {"network": network_tag(choice.network), "features": choice.features, "val_auroc": choice.val_auroc,
              "val_acc": choice.val_acc}
    return {"encoder": probe.RANDOM, **network_values(choice.network), "features": choice.features}, chosen
