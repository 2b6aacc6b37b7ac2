#!/usr/bin/env python
"""How much do labels buy, with and without pretraining? The study's experiment in one command.

    python scripts/label_efficiency.py --dataset breastmnist --encoders pretrain-breastmnist --labels 10 50 all
    python scripts/label_efficiency.py --dataset bloodmnist --encoders pretrain-bloodmnist moco-bloodmnist \\
        --samples 100 250 1000 all --seeds 0 1 2 --protocols probe baseline

For every label budget (--labels per class, or --samples in all) and seed (the draw of the labelled
images), each protocol is a cell:
  probe     logistic regression on each frozen encoder (read at --features: by default the best of its last
            layer, each stage and all stages on the validation split, for each cell's labels), and the
            references: a random-init encoder of each backbone (its last layer), the raw pixels, and the
            strongest untrained features (random-init stages of each backbone and of the small CNN, chosen the
            same way); each encoder's features are computed once and reused by every probe cell
  finetune  all layers from each encoder
  baseline  the same network from scratch (supervised)
Each cell trains as its stage's train.py does (its checkpoint in that stage's models/ folder, named
le-<dataset>-<protocol>-<encoder>-<budget>-s<seed>-<digest of its settings>, so its test.py can test it
again), is tested on the test split, and becomes a row of <out>/results.csv. summary.md and
label_efficiency.png are written from all rows at the end. A rerun skips the cells already in results.csv
(the reference rows too, when other encoders are added); a failed cell is reported and the others go on.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import threading
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from common.cli.options import DataOptions, from_namespace
from common.cli.parsers import POSITIVE, POSITIVE_INT, SEED, data_parser, size_suffix
from common.data.datamodule import MedMNISTDataModule, select_subset
from common.evaluation.report import report
from common.evaluation.features import FeatureDataModule, extract_features, feature_device
from common.training.trainer import file_md5
from common.evaluation.probe_defaults import EPOCHS as PROBE_EPOCHS, SOLVERS
from downstream.logistic_regression import probe as lr_probe, train as probe_train
from downstream.logistic_regression.options import ProbeOptions
from downstream.logistic_regression.references import network_tag, network_values
from downstream.logistic_regression.strongest import (TAG as STRONGEST, best_features, choose, encode_candidates,
                                                    encode_network_candidates, untrained_networks)
from downstream.resnet import finetune, train as finetune_train
from models.checkpoints import load_encoder, read_checkpoint
from models.feature_choice import BEST, BEST_HELP, FEATURES_HELP, LAST, feature_choice_option
from models.imagenet import IMAGENET, imagenet_encoder
from models.choices import RANDOM
from models.pixels import PIXELS
from experiments.benchmarking import quiet_lightning
from experiments.label_efficiency_report import PROTOCOLS, read_rows, write_reports, write_rows, write_table
from utils import UserError, output_root, resolve_encoder

# the SimCLR paper's L-BFGS probe: on the SimCLR encoders of the README (5 label draws), test AUROC at 10 labels
# per class 0.676 +- 0.036 against AdamW's 0.621 +- 0.116 (breastmnist) and 0.663 +- 0.017 against 0.652 +- 0.022
# (retinamnist); at 50 per class and with all labels within 0.02 of each other
PROBE_SOLVER = "lbfgs"
FINETUNE_EPOCHS = 30  # ours: the study finetuned for its own choice of epochs; 30 fit a 2-core CPU's hour
ALL = "all"
REFERENCES = (RANDOM, PIXELS, STRONGEST)  # --references
SETTINGS_DIGEST = 6  # hex digits of a cell's settings in its run name
OUT = Path("outputs") / "label_efficiency"  # under the output root (the repository or $MEDSIMCLR_OUTPUT_ROOT)


class LabelBudget:
    """--labels and --samples: a positive number of labels, or 'all' (an argparse type; `outside()` for the tests)."""
    __name__ = "budget"

    def __call__(self, text: str) -> int | str:
        if text == ALL:
            return ALL
        if not (text.isdigit() and int(text) > 0):
            raise argparse.ArgumentTypeError(f"must be a positive number of labels or '{ALL}', got {text}")
        return int(text)

    @staticmethod
    def outside() -> list[str]:
        return ["0", "-1", "x", "2.5"]


budget_value = LabelBudget()


def build_parser():
    parser = data_parser("The label-efficiency experiment: probe, finetuning and baseline at several label budgets.",
                         labels_alias=False)
    parser.add_argument("--encoders", nargs="+", default=None,
                        help="pretrained encoders (run names or paths, any method, or 'imagenet': torchvision's supervised "
                             "ResNet-18); default pretrain-<dataset> (-<size> when not 28)")
    budgets = parser.add_mutually_exclusive_group()
    budgets.add_argument("--labels", nargs="+", type=budget_value, default=None,
                         help=f"labelled training images per class, or {ALL} (default 10 50 {ALL})")
    budgets.add_argument("--samples", nargs="+", type=budget_value, default=None,
                         help=f"labelled training images in all, drawn at random, or {ALL} (the study's count)")
    parser.add_argument("--seeds", nargs="+", type=SEED, default=[0, 1, 2], help="one draw of the labels each")
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    parser.add_argument("--references", nargs="*", choices=REFERENCES, default=list(REFERENCES),
                        help="the probe's reference rows: a random-init encoder of each backbone (last layer), the raw "
                             f"pixels, {STRONGEST} (the strongest untrained features, chosen on val); default all three, "
                             "none with an empty list")
    parser.add_argument("--features", type=feature_choice_option, default=BEST,
                        help=FEATURES_HELP + BEST_HELP + " (chosen for each cell's labels); of the pretrained "
                             f"encoders' probe (default {BEST}: each encoder read at its best candidate, as the "
                             "strongest untrained reference is)")
    parser.add_argument("--probe-solver", choices=SOLVERS, default=PROBE_SOLVER,
                        help=f"the probe's solver (default {PROBE_SOLVER}: see PROBE_SOLVER)")
    parser.add_argument("--probe-epochs", type=POSITIVE_INT, default=PROBE_EPOCHS, help="of the adamw probe")
    parser.add_argument("--finetune-epochs", type=POSITIVE_INT, default=FINETUNE_EPOCHS,
                        help="epochs of each finetuning and baseline cell")
    parser.add_argument("--out", default=None, help="results folder (default outputs/label_efficiency/<dataset>)")
    parser.add_argument("--cell-timeout", type=POSITIVE, default=None, metavar="SECONDS",
                        help="stop a cell that runs longer: recorded in timed_out.csv, reported, and skipped by later "
                             "runs unless --retry-timed-out (default: no limit)")
    parser.add_argument("--retry-timed-out", action="store_true",
                        help="run again the cells an earlier run stopped at --cell-timeout")
    return parser


TIMED_OUT = "timed_out.csv"  # the cells --cell-timeout stopped, beside results.csv
TIMED_OUT_COLUMNS = ("protocol", "encoder", "labels", "seed", "settings", "seconds")


class CellTimeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float | None):
    """Raise CellTimeout in the block after `seconds` of wall time (SIGALRM: the main thread of Unix processes; no
    limit elsewhere). Torch checks for signals between operations, so a long cell stops within one of them."""
    if seconds is None or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        raise CellTimeout(f"past --cell-timeout {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True, kw_only=True)
class LabelEfficiencyOptions(DataOptions):
    """build_parser's options, typed."""
    encoders: list[str] | None
    labels: list[int | str] | None  # per class (--labels), or None with --samples
    samples: list[int | str] | None
    seeds: list[int]
    protocols: list[str]
    references: list[str]
    features: str | None
    probe_solver: str
    probe_epochs: int
    finetune_epochs: int
    out: str | None
    cell_timeout: float | None
    retry_timed_out: bool


def parse_args(argv=None) -> LabelEfficiencyOptions:
    args = build_parser().parse_args(argv)
    labels = [10, 50, ALL] if args.labels is None and args.samples is None else args.labels
    return from_namespace(LabelEfficiencyOptions, args, labels=labels)


@dataclass(frozen=True)
class Budget:
    per_class: int | None = None
    samples: int | None = None

    @property
    def text(self) -> str:  # as results.csv and the tables name it
        return f"{self.per_class}/class" if self.per_class else str(self.samples) if self.samples else ALL

    @property
    def tag(self) -> str:  # in run names
        return f"{self.per_class}-spc" if self.per_class else f"{self.samples}-samples" if self.samples else ALL

    def values(self) -> dict:  # the stages' options
        return {"samples_per_class": self.per_class, "samples": self.samples}


def check_budgets(args: LabelEfficiencyOptions, data: MedMNISTDataModule) -> list[Budget]:
    """The budgets, each checked against the training split before anything trains."""
    option, values = ("--labels", args.labels) if args.labels is not None else ("--samples", args.samples)
    budgets = []
    for value in values:
        if value == ALL:
            budgets.append(Budget())
            continue
        budget = Budget(per_class=value) if option == "--labels" else Budget(samples=value)
        try:
            select_subset(data.splits["train"][1], budget.samples, budget.per_class, 0, data.num_classes)
        except UserError as err:
            raise UserError(f"{option} {value}: {err}") from None
        budgets.append(budget)
    return budgets


@dataclass(frozen=True)
class Encoder:
    tag: str  # in tables and run names: the run's name, or random-<network>, scratch-<network>, pixels
    path: Path | None  # None: a random-init network, or the raw pixels
    options: dict  # build_backbone's (the network of a random-init one)
    md5: str | None = None  # of the checkpoint: a retrained encoder of the same name is a new one

    @property
    def reference(self) -> str:
        """What the probe's --encoder (finetuning's --init) takes for it (the strongest untrained features: a
        random-init network, chosen per cell)."""
        if self.path:
            return str(self.path)
        return PIXELS if self.tag == PIXELS else IMAGENET if self.tag.startswith(f"{IMAGENET}-") else RANDOM


@dataclass(frozen=True)
class Cell:
    protocol: str
    encoder: Encoder
    budget: Budget
    seed: int
    settings: str  # what else decides its result: image size, training budget, the encoder's file

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """What identifies its row in results.csv: a rerun with other settings runs new cells."""
        return self.protocol, self.encoder.tag, self.budget.text, str(self.seed), self.settings

    def name(self, dataset: str) -> str:
        """Its checkpoint's run name; the digest of its settings keeps the cells of other settings."""
        digest = hashlib.md5(self.settings.encode()).hexdigest()[:SETTINGS_DIGEST]
        return f"le-{dataset}-{self.protocol}-{self.encoder.tag}-{self.budget.tag}-s{self.seed}-{digest}"


def row_key(row: dict) -> tuple[str, str, str, str, str]:
    """Cell.key of a row of results.csv."""
    return row["protocol"], row["encoder"], row["labels"], row["seed"], row.get("settings") or ""


def plan(args: LabelEfficiencyOptions, data: MedMNISTDataModule, budgets: list[Budget]) -> list[Cell]:
    """Every cell, encoders resolved (each is loaded once here to check it reads the dataset)."""
    pretrained = []
    for reference in args.encoders or [f"pretrain-{data.flag}{size_suffix(args.size)}"]:
        if reference == IMAGENET:  # torchvision's supervised ResNet-18, the third starting point
            options = imagenet_encoder(None, data.num_channels, data.size, dims=data.dims).backbone_options
            pretrained.append(Encoder(f"{IMAGENET}-{network_tag(options)}", None, options))
            continue
        path = resolve_encoder(reference, "--encoders", also=("resnet",))
        options = load_encoder(path, "--encoders", data.num_channels, data.size, data.dims).backbone_options
        pretrained.append(Encoder(path.stem, path, options, file_md5(path)))
    networks = {network_tag(e.options): e.options for e in pretrained}
    random = [Encoder(f"random-{tag}", None, options) for tag, options in networks.items()]
    untrained = {network_tag(n): n for options in networks.values() for n in untrained_networks(options, data)}
    strongest = Encoder(STRONGEST, None, {"candidates": untrained})
    by_protocol = {
        "probe": pretrained + random * (RANDOM in args.references)
        + [Encoder(PIXELS, None, {})] * (PIXELS in args.references) + [strongest] * (STRONGEST in args.references),
        "finetune": pretrained,
        "baseline": [Encoder(f"scratch-{tag}", None, options) for tag, options in networks.items()],
    }
    probe = "L-BFGS" if args.probe_solver == "lbfgs" else f"{args.probe_epochs} epochs"
    budget = {"probe": probe, "finetune": f"{args.finetune_epochs} epochs", "baseline": f"{args.finetune_epochs} epochs"}

    def settings(protocol: str, encoder: Encoder) -> str:
        md5 = f", encoder md5 {encoder.md5}" if encoder.md5 else ""
        features = f", features {args.features}" if protocol == "probe" and encoder.path and args.features else ""
        tried = f", from {' '.join(encoder.options['candidates'])}" if encoder.tag == STRONGEST else ""
        return f"{data.size} px, {budget[protocol]}{md5}{features}{tried}"

    return [Cell(protocol, encoder, budget, seed, settings(protocol, encoder)) for protocol in args.protocols
            for encoder in by_protocol[protocol] for budget in budgets for seed in args.seeds]


class Runner:
    """Runs cells in this process; the features of each probe encoder are computed once."""

    def __init__(self, args: LabelEfficiencyOptions, data: MedMNISTDataModule):
        self.args, self.data = args, data
        self.encoded: dict[tuple, tuple] = {}  # (encoder tag, seed for a random one, ...) -> (encoder, path, features)
        self.chosen = LAST  # what the last probe cell read (the strongest untrained: which network and features)

    def common_values(self, cell: Cell) -> dict:
        """The options every stage a cell runs is given: the data, the draw, the budget, the run's name."""
        return {**self.data.source.values(), "seed": cell.seed, **cell.budget.values(),
                "name": cell.name(self.data.flag), "overwrite": True}

    def labelled(self, cell: Cell) -> torch.Tensor:
        """Indices of this cell's labelled training images: the stages' own draw for its budget and seed."""
        labels = self.data.splits["train"][1]
        return select_subset(labels, cell.budget.samples, cell.budget.per_class, cell.seed, self.data.num_classes)

    def subset(self, cell: Cell) -> MedMNISTDataModule:
        """The dataset with only this cell's labelled training images."""
        return self.data.subset(cell.budget.samples, cell.budget.per_class, cell.seed)

    def features(self, cell: Cell, run: ProbeOptions) -> tuple:
        """(frozen encoder read at its features, its path or 'random', features of every split), computed at the
        first cell that needs them: once per encoder and features (per seed for a random-init one, whose weights the
        seed draws)."""
        random = cell.encoder.reference == RANDOM
        key = (cell.encoder.tag, cell.seed if random else None, run.backbone if random else None, run.features)
        if key not in self.encoded:
            encoder, path = lr_probe.frozen_encoder(run.encoder, self.data, cell.seed, run.backbone, run.stem,
                                                    run.resize, run.patch_topk)
            encoder = lr_probe.probe_features(encoder, run.features)
            device = feature_device(self.args.accelerator)
            self.encoded[key] = (encoder, path, {split: (extract_features(encoder, x, device), y.to(device))
                                                 for split, (x, y) in self.data.splits.items()})
        return self.encoded[key]

    def strongest(self, cell: Cell) -> tuple[dict, str]:
        """train.py's encoder options of the strongest untrained features for this cell's labels, chosen on the
        train and val features of every candidate (random-init networks of this seed: encoded once per seed), and
        what was chosen."""
        networks, encoded = cell.encoder.options["candidates"], {}
        for tag, options in networks.items():
            key = ("candidates", tag, cell.seed)
            if key not in self.encoded:
                self.encoded[key] = encode_candidates(options, cell.seed, self.data.splits,
                                                      feature_device(self.args.accelerator))
            encoded[tag] = self.encoded[key]
        choice = choose(encoded, networks, self.data.num_classes, self.data.multilabel, keep=self.labelled(cell))
        values = {"encoder": RANDOM, **network_values(choice.network), "features": choice.features}
        return values, f"{network_tag(choice.network)} {choice.features} (val AUROC {choice.val_auroc:.4f})"

    def best(self, cell: Cell) -> str:
        """--features best: the pretrained encoder's candidate that scores best on val for this cell's labels
        (every candidate encoded once per encoder)."""
        key = ("candidates", cell.encoder.tag, None)
        if key not in self.encoded:
            encoder, _ = lr_probe.frozen_encoder(cell.encoder.reference, self.data, cell.seed)
            self.encoded[key] = encode_network_candidates(encoder, self.data.splits,
                                                          feature_device(self.args.accelerator))
        return best_features(self.encoded[key], self.data.num_classes, self.data.multilabel,
                             keep=self.labelled(cell)).features

    def probe(self, cell: Cell) -> Path:
        encoder_values = {"encoder": cell.encoder.reference}
        if cell.encoder.tag == STRONGEST:
            encoder_values, self.chosen = self.strongest(cell)
        elif cell.encoder.reference in (RANDOM, IMAGENET):
            encoder_values.update(network_values(cell.encoder.options), features=LAST)
        elif cell.encoder.path:
            encoder_values["features"] = self.best(cell) if self.args.features == BEST else self.args.features
        run = probe_train.options(**{**self.common_values(cell), **encoder_values, "solver": self.args.probe_solver,
                                     "epochs": self.args.probe_epochs})
        encoder, path, encoded = self.features(cell, run)
        if cell.encoder.tag != STRONGEST:
            self.chosen = getattr(encoder, "features_read", LAST)
        data, keep = self.subset(cell), self.labelled(cell).to(encoded["train"][0].device)
        features = FeatureDataModule(data, encoder)
        features.features = {**encoded, "train": (encoded["train"][0][keep], encoded["train"][1][keep])}
        final = lr_probe.train_probe(run, data, encoder, path, features)
        report(lr_probe.test_probe(final, data, features, run), data.class_names, final,
               {"stage": "logistic_regression", "dataset": data.flag, "encoder": str(path)})
        return final

    def finetune(self, cell: Cell) -> Path:
        if cell.protocol == "finetune":
            imagenet = cell.encoder.reference == IMAGENET
            init = {"init": cell.encoder.reference, **(network_values(cell.encoder.options) if imagenet else {})}
        else:
            init = {"init": "none", **network_values(cell.encoder.options)}
        run = finetune_train.options(**{**self.common_values(cell), **init, "epochs": self.args.finetune_epochs})
        final = finetune.run(run)
        finetune.test_finetuned(final, read_checkpoint(final), self.data, run)
        return final

    def run(self, cell: Cell) -> dict:
        start = time.perf_counter()
        final = self.probe(cell) if cell.protocol == "probe" else self.finetune(cell)
        result = json.loads(final.with_name(final.stem + ".test.json").read_text())
        protocol, encoder, labels, seed, settings = cell.key
        return {"protocol": protocol, "encoder": encoder, "labels": labels, "seed": seed, "settings": settings,
                "labelled_images": len(self.labelled(cell)), "features": self.chosen if protocol == "probe" else "",
                "test_acc": result["acc"], "test_auroc": result["auroc"],
                "per_class_acc": ";".join(f"{a:.4f}" if a is not None else "nan" for a in result["per_class_acc"]),
                "seconds": round(time.perf_counter() - start, 1), "checkpoint": str(final)}


def main(argv=None):
    args = parse_args(argv)
    data = MedMNISTDataModule(args.dataset, args.size, args.data_dir, seed=0, storage=args.data_storage).load()
    data.require_labels("the label-efficiency command")
    budgets = check_budgets(args, data)
    cells = plan(args, data, budgets)
    out = Path(args.out).expanduser() if args.out else output_root() / OUT / data.flag
    out.mkdir(parents=True, exist_ok=True)
    rows = read_rows(out / "results.csv")
    done = {row_key(r) for r in rows}
    timed_out = [] if args.retry_timed_out else read_rows(out / TIMED_OUT)
    skipped = {row_key({**r, "settings": r.get("settings") or ""}) for r in timed_out}
    todo = [cell for cell in cells if cell.key not in done and cell.key not in skipped]
    print(f"{len(cells)} cells, {len(cells) - len(todo)} already in {out / 'results.csv'}"
          + (f" or timed out before ({out / TIMED_OUT}; --retry-timed-out runs them)" if skipped & {c.key for c in cells}
             else "") + f", {len(todo)} to run (each cell's output: {out / 'cells.log'})", flush=True)
    runner, failed, stopped = Runner(args, data), [], []
    with open(out / "cells.log", "a") as log, quiet_lightning():
        for cell in tqdm(todo, desc="cells", unit="cell", dynamic_ncols=True, disable=not todo):
            try:
                with redirect_stdout(log), redirect_stderr(log), time_limit(args.cell_timeout):
                    rows.append(runner.run(cell))
            except CellTimeout as err:
                stopped.append(cell.name(data.flag))
                protocol, encoder, labels, seed, settings = cell.key
                timed_out = [r for r in timed_out if row_key(r) != cell.key] + [
                    {"protocol": protocol, "encoder": encoder, "labels": labels, "seed": seed, "settings": settings,
                     "seconds": args.cell_timeout}]
                write_table(out / TIMED_OUT, timed_out, TIMED_OUT_COLUMNS)
                tqdm.write(f"note: cell {cell.name(data.flag)} stopped: {err}", file=sys.stderr)
                continue
            except Exception as err:  # a failed cell is reported; the others go on, and a rerun retries it
                failed.append(cell.name(data.flag))
                reason = str(err).splitlines()[0] if str(err) else repr(err)
                tqdm.write(f"error: cell {cell.name(data.flag)} failed: {reason}", file=sys.stderr)
                continue
            write_rows(out / "results.csv", rows)
    wanted = {cell.key for cell in cells}
    title = f"{data.flag}: label efficiency"
    summary, figure = write_reports(out, [r for r in rows if row_key(r) in wanted], [b.text for b in budgets], title)
    print(f"wrote {out / 'results.csv'}\nwrote {summary}\nwrote {figure}")
    if stopped:
        print(f"{len(stopped)} cells timed out ({', '.join(stopped[:3])}{', ...' if len(stopped) > 3 else ''}): "
              f"listed in {out / TIMED_OUT}, left out of the tables; --retry-timed-out (with a larger --cell-timeout) "
              "runs them")
    if failed:
        raise UserError(f"{len(failed)} of {len(todo)} cells failed ({', '.join(failed[:3])}"
                        f"{', ...' if len(failed) > 3 else ''})", "see the errors above; the same command retries them")
    return out
