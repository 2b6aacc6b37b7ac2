#!/usr/bin/env python
"""How fast is pretraining (any method, any backbone), and how far is it from what the model alone allows?

    python scripts/benchmark.py                                   # pneumoniamnist, 28 px, batch 256
    python scripts/benchmark.py --accelerator cuda --precision bf16-mixed --json bench.json
    python scripts/benchmark.py --synthetic --skip logreg         # random images of the real split sizes
    python scripts/benchmark.py --dataset adrenalmnist3d --batch-size 64 --skip logreg   # 3D: ResNet-18 3D, 28^3

Sections (each can be skipped with --skip):
  loader    one epoch of the training loader alone, no model: how fast batches come out of memory or of the
            memory-mapped cache (to the device), and the resident memory that reading every image leaves.
  compute   the method's training step on views already augmented, normalised and on the device:
            forward + loss + backward + optimiser (+ momentum update and queue, where the method has them).
            The upper limit of the real path.
  pretrain  the real path: MedMNISTDataModule + batched augmentation + the method's module under a Trainer,
            and its ratio to `compute`. With both, a compute-only step runs after each real one, in the same
            Trainer run, each timed on its own: a machine whose speed drifts moves both alike.
  monitor   the online kNN monitor of pretraining: features of the training and validation images and the kNN
            classifier, in seconds and as a share of a training epoch of the real path.
  augment   each augmentation sequence alone, on the device, as on_after_batch_transfer runs it.
  logreg    the logistic-regression stage end to end: features of all splits from a random-init encoder,
            the head trained for --lr-epochs epochs under a Trainer (and as a bare torch loop), test accuracy.
  memory    peak resident memory of the process and, on CUDA, peak allocated GPU memory per section.

The benchmark never downloads: when the dataset's npz is not in --data-dir, it generates random images
in MedMNIST's format with the real split sizes (as --synthetic does) and says so.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

from common.cli.options import as_record, from_namespace
from experiments import benchmarking as bench
from experiments.benchmarking import BenchmarkOptions
from common.augment.names import ALL_AUGMENTATIONS, AUGMENTATIONS, AUGMENTATIONS_3D
from common.cli.parsers import NON_NEGATIVE_INT, POSITIVE_INT, SEED, Parser, dataset_flag, new_network, resolve_data
from common.data.cache import images_nbytes
from common.data.datamodule import MedMNISTDataModule
from common.data.registry import DEFAULT_DATA_DIR, SIZES, dataset_info, npz_path, spatial_dims
from common.data.storage import STORAGES
from common.data.sources import is_flag, known_dims
from common.data.synthetic import write_synthetic
from common.training.hardware import check_precision
from common.training.trainer import peak_rss_mb
from models.backbones import BACKBONES, DEFAULT_BACKBONE, DEFAULT_BACKBONE_3D
from models.choices import STEMS
from pretrain import METHODS
from pretrain.cli import checked_augmentation
from utils import QUIET_WARNINGS, UserError, atomic_write_text

SECTIONS = ("loader", "compute", "pretrain", "monitor", "augment", "logreg", "memory")
LARGE_SET_SKIPS = ("monitor", "logreg")  # both encode every image: hours for 100,000 images at 224 px on a CPU
# about 2 minutes for the default run on 2 quiet CPU cores (a ResNet-18 step on 512 views of 28 px: ~0.77 s
# there with 2 threads; the logistic-regression stage: ~8 s). A busy machine makes everything slower.
WARMUP, STEPS = 3, 60
BUSY_LOAD = 0.75  # 1-minute load average per usable CPU above which the timings are flagged as noisy


def build_parser():
    parser = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="pneumoniamnist", type=dataset_flag,
                        help="MedMNIST flag (2D, or 3D: adrenalmnist3d, ...), or a folder of your scans or an npz "
                             "file (read as the stages read them: README 'Your own data'; never synthetic)")
    parser.add_argument("--size", type=int, default=28, choices=SIZES, help="image size (3D: 28 or 64 voxels per side)")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="folder with the MedMNIST npz files")
    parser.add_argument("--synthetic", action="store_true",
                        help="use random images of the real split sizes even if the npz file exists")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=256, help="images per step (2 views each)")
    parser.add_argument("--method", default="simclr", choices=list(METHODS), help="pretraining method")
    parser.add_argument("--backbone", default=None, choices=list(BACKBONES),
                        help=f"encoder network (default {DEFAULT_BACKBONE}; {DEFAULT_BACKBONE_3D} on 3D data sets)")
    parser.add_argument("--stem", default=None, choices=list(STEMS), help="ResNet stem (default imagenet)")
    parser.add_argument("--aug", default=None, choices=ALL_AUGMENTATIONS,
                        help="sequence of the pretraining path (default novel; volume on 3D data sets)")
    parser.add_argument("--steps", type=POSITIVE_INT, default=STEPS, help="timed steps per measurement")
    parser.add_argument("--warmup", type=NON_NEGATIVE_INT, default=WARMUP, help="untimed steps before them")
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="32-true", choices=["32-true", "16-mixed", "bf16-mixed"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (compute and pretrain)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="channels-last memory format for the model and its input (the stages' default)")
    parser.add_argument("--lr-epochs", type=POSITIVE_INT, default=100, help="epochs of the logistic-regression head")
    parser.add_argument("--skip", nargs="+", default=[], choices=SECTIONS, metavar="SECTION",
                        help=f"sections to skip: {', '.join(SECTIONS)}")
    parser.add_argument("--threads", type=POSITIVE_INT, default=None,
                        help="torch.set_num_threads; omitted: torch's own default")
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON")
    parser.add_argument("--data-storage", default="auto", choices=STORAGES,
                        help="the stages' option: images in memory, or memory-mapped from the decoded cache")
    parser.add_argument("--large-set", type=POSITIVE_INT, default=None, metavar="N",
                        help="generate N training images (and N/10 each for val and test) of --size px in MedMNIST's "
                             "format and read them through the memory-mapped cache, as a set larger than memory; "
                             f"skips {' and '.join(LARGE_SET_SKIPS)}")
    parser.add_argument("--large-dir", type=Path, default=None, metavar="DIR",
                        help="where --large-set writes its npz and cache (about 2.1 x N x size^2 bytes for grey "
                             "images; default: a temporary folder, deleted at the end)")
    return parser


def parse_args(argv=None) -> BenchmarkOptions:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.large_set:
        args.skip = sorted(set(args.skip) | set(LARGE_SET_SKIPS))
        args.data_storage = "mmap" if args.data_storage == "auto" else args.data_storage  # memory: for comparison
    if is_flag(args.dataset):
        dims = spatial_dims(args.dataset)
    else:  # a folder (decoded into its cache once, as the stages do) or an npz: the real data, never a stand-in
        args.labels_from, args.fit, args.window = None, "pad", None
        dims = resolve_data(args).dims
    network = new_network(args.backbone, args.stem, 1, args.size, dims=dims)  # its checks: a 2D network on volumes, ...
    args.backbone, args.stem = network["backbone"], network["stem"]
    args.aug = checked_augmentation(args.aug, args.dataset)  # the default sequence for images or volumes
    return from_namespace(BenchmarkOptions, args)


def resolve_device(args: BenchmarkOptions) -> tuple[str, torch.device]:
    """(Lightning accelerator, torch device); refuses precisions that do not make sense on the device."""
    cuda = args.accelerator == "cuda" or (args.accelerator == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        raise UserError("--accelerator cuda: no CUDA device is available", "use --accelerator cpu")
    check_precision(args.precision, "cuda" if cuda else "cpu")  # the stages' check: no bf16 or fp16 on a CPU
    return ("cuda", torch.device("cuda", 0)) if cuda else ("cpu", torch.device("cpu"))


def load_data(args: BenchmarkOptions, tmp: str, results: dict) -> tuple[MedMNISTDataModule, bool]:
    """The dataset, or a synthetic stand-in of its real split sizes when asked or when the file is missing, or
    (--large-set) a generated set of the size asked for, decoded into its memory-mapped cache."""
    if not is_flag(args.dataset):
        if args.synthetic or args.large_set:
            raise UserError(f"--synthetic and --large-set stand in for a MedMNIST flag, not for {args.dataset}",
                            "leave them out to time your own data")
        data = MedMNISTDataModule(args.dataset, args.size, batch_size=args.batch_size, seed=args.seed,
                                  drop_last=True, download=False, storage=args.data_storage).load()
        check_batch(args, data)
        return data, False
    info = dataset_info(args.dataset)
    path = npz_path(args.dataset, args.size, Path(args.data_dir).expanduser())
    synthetic = args.synthetic or args.large_set or not path.is_file()
    if args.large_set:
        path = large_set(args, Path(args.large_dir or tmp), results)
    elif synthetic:
        sizes = "/".join(str(info["n_samples"][s]) for s in ("train", "val", "test"))
        reason = "--synthetic" if args.synthetic else f"{path} not found"
        print(f"*** SYNTHETIC DATA ({reason}): random {args.dataset}-shaped images, train/val/test = {sizes}. "
              "Speeds are representative; the accuracy is not. ***", flush=True)
        path = write_synthetic(Path(tmp), args.dataset, args.size, args.seed)
    start = time.perf_counter()
    data = MedMNISTDataModule(args.dataset, args.size, path.parent, batch_size=args.batch_size, seed=args.seed,
                              drop_last=True, download=False, storage=args.data_storage).load()
    if args.large_set:
        results["large_set"]["load_seconds"] = time.perf_counter() - start
        results["large_set"]["peak_rss_after_load_mb"] = peak_rss_mb()
    check_batch(args, data)
    return data, synthetic


def check_batch(args: BenchmarkOptions, data: MedMNISTDataModule) -> None:
    if args.batch_size > data.num_train():
        raise UserError(f"--batch-size {args.batch_size} is larger than the {data.num_train()} training images",
                        f"use --batch-size {data.num_train()} or less")


def large_set(args: BenchmarkOptions, folder: Path, results: dict) -> Path:
    """Write the --large-set npz (streamed: never in memory as a whole) and record its size."""
    n, small = args.large_set, max(1, args.large_set // 10)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"*** LARGE SET: generating {n:,} + {small:,} + {small:,} {args.dataset}-shaped images of {args.size} px "
          f"in {folder} ... ***", flush=True)
    start = time.perf_counter()
    path = write_synthetic(folder, args.dataset, args.size, args.seed, splits=(n, small, small))
    results["large_set"] = {"images": n + 2 * small, "train_images": n, "images_bytes": images_nbytes(path),
                            "npz_bytes": path.stat().st_size, "generate_seconds": time.perf_counter() - start,
                            "folder": str(folder)}
    return path


def fresh_copy(data: MedMNISTDataModule, **changes) -> MedMNISTDataModule:
    """Another DataModule on the same in-memory (CPU) splits: Trainer.setup moves a module's splits to CUDA."""
    copy = MedMNISTDataModule(data.dataset, data.size, data.path.parent, batch_size=data.batch_size, seed=data.seed,
                              drop_last=data.drop_last, download=False, storage=data.storage, **changes)
    copy.splits, copy.mapped = dict(data.splits), dict(data.mapped)
    return copy


def run_sections(args: BenchmarkOptions, data: MedMNISTDataModule, accelerator: str, device: torch.device,
                 results: dict) -> None:
    """Sections 1-4 into `results`, each with its wall time and, on CUDA, its peak allocated memory."""
    cuda_peaks = {}

    def section(name, label, measure):
        if name in args.skip:
            return
        print(f"running {label} ...", end=" ", flush=True)
        bench.reset_cuda_peak(device)
        start = time.perf_counter()
        results[name] = measure()
        results["wall_seconds"][name] = time.perf_counter() - start
        print(f"{results['wall_seconds'][name]:.1f} s", flush=True)
        if device.type == "cuda":
            cuda_peaks[name] = bench.cuda_peak_mb(device)

    section("loader", "0 the training loader alone, one epoch", lambda: bench.loader_pass(fresh_copy(data), device))
    both = "compute" not in args.skip and "pretrain" not in args.skip
    if both:  # step by step in one run: the ratio is not moved by a change of the machine's speed between them
        section("pretrain", "1+2 compute-only limit and real pretraining path, interleaved",
                lambda: bench.pretrain_path(args, fresh_copy(data), accelerator, interleave=True))
        pretrain = results["pretrain"]
        results["compute"] = pretrain.pop("compute")
        pretrain["ratio_to_compute"] = pretrain["images_per_s"] / results["compute"]["images_per_s"]
    else:
        section("compute", "1 compute-only limit", lambda: bench.compute_only(args, data, device))
        section("pretrain", "2 real pretraining path",
                lambda: bench.pretrain_path(args, fresh_copy(data), accelerator, interleave=False))
    images = data.splits["train"][0][: args.batch_size]
    if "pretrain" in results:  # the real path's time for an epoch of the training split
        results["pretrain"]["epoch_seconds"] = results["pretrain"]["steps_per_epoch"] * results["pretrain"]["step_ms"] / 1000
    epoch = results.get("pretrain", {}).get("epoch_seconds")
    section("monitor", "2b kNN monitor", lambda: bench.monitor(args, data, device, epoch))
    sequences = AUGMENTATIONS_3D if data.dims == 3 else AUGMENTATIONS
    section("augment", "3 augmentation", lambda: bench.augmentation(args, images, sequences, device))
    section("logreg", "4 logistic regression", lambda: bench.logistic_regression(args, fresh_copy(data), accelerator,
                                                                                  device))
    if "memory" not in args.skip:
        results["memory"] = {"peak_rss_mb": peak_rss_mb()}
        if device.type == "cuda":
            results["memory"]["cuda_peak_mb"] = max(cuda_peaks.values(), default=bench.cuda_peak_mb(device))
            results["memory"]["cuda_peak_mb_by_section"] = cuda_peaks


def warn_if_busy(machine: dict) -> None:
    load, cpus = machine["load_average"], machine["cpus_usable"]
    if load and load[0] > BUSY_LOAD * cpus:
        hint = " (a single torch thread suffers less from this: --threads 1)" if machine["torch_threads"] > 1 else ""
        print(f"note: the machine is busy (load average {load[0]:.2f} on {cpus} CPUs): timings will be lower and "
              f"noisy, as torch's threads wait for cores that other processes hold{hint}", flush=True)


def run(args: BenchmarkOptions) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    accelerator, device = resolve_device(args)
    machine = bench.machine_info(device)
    print(f"machine: {machine['cpus_usable']} of {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
          f"torch {machine['torch']}, torch threads {machine['torch_threads']}, lightning {machine['lightning']}, "
          f"device {device} ({machine['device_name']}), load average {fmt_load(machine['load_average'])}", flush=True)
    warn_if_busy(machine)
    results = {"settings": None, "machine": machine, "wall_seconds": {}}
    with tempfile.TemporaryDirectory(prefix="benchmark-medmnist-") as tmp:
        data, synthetic = load_data(args, tmp, results)
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in as_record(args).items()}
        results["settings"] = {**settings, "synthetic": synthetic, "data_file": None if synthetic else str(data.path),
                               "views_per_step": 2 * args.batch_size, "channels": data.num_channels}
        run_sections(args, data, accelerator, device, results)
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return results


# ------------------------------------------------------------------------------ the table
def fmt_load(load) -> str:
    return " ".join(f"{x:.2f}" for x in load) if load else "n/a"


def fmt(value: float) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def storage_label(results: dict) -> str:
    return "memory-mapped cache" if results["settings"]["data_storage"] == "mmap" else "read into memory"


def table_rows(results: dict) -> list[tuple[str, str, str, str]]:
    rows = []

    def add(section, what, value, unit=""):
        rows.append((section, what, fmt(value), unit))

    def steps(r):
        add("", f"mean step ({r['steps']} timed steps)", r["step_ms"], "ms")
        if "step_ms_median" in r:
            add("", "median step", r["step_ms_median"], "ms")

    if "large_set" in results:
        r = results["large_set"]
        add("0 large set", f"{r['images']:,} generated images (uncompressed)", r["images_bytes"] / 2**20, "MB")
        add("", "  ... generated and written in", r["generate_seconds"], "s")
        add("", f"  ... loaded ({storage_label(results)}) in", r.get("load_seconds"), "s")
        add("", "  ... peak RSS once loaded, before any training", r.get("peak_rss_after_load_mb"), "MB")
    if "loader" in results:
        r = results["loader"]
        add("0 loader alone", f"one epoch of the training loader ({r['images']:,} images, no model)", r["images_per_s"],
            "images/s")
        add("", "  ... peak RSS after it", r["peak_rss_mb"], "MB")
    if "compute" in results:
        r = results["compute"]
        add("1 compute-only", "fwd + loss + bwd + optimiser", r["images_per_s"], "images/s")
        steps(r)
    if "pretrain" in results:
        r = results["pretrain"]
        add("2 real pretraining", "Trainer: data + augment + step", r["images_per_s"], "images/s")
        steps(r)
        if "ratio_to_compute" in r:
            add("", "ratio to compute-only", r["ratio_to_compute"], "x")
        add("", "whole fit() incl. set-up + warm-up", r["fit_seconds"], "s")
    if "monitor" in results:
        r = results["monitor"]
        add("2b kNN monitor", f"train + val features and kNN ({r['images']:,} images)", r["seconds"], "s")
        if "share_of_epoch" in r:
            add("", "  ... share of a training epoch", 100 * r["share_of_epoch"], "%")
            add("", f"  ... at the default --monitor-every {r['every_epochs']}", 100 * r["share_at_default"], "%")
    if "augment" in results:
        for i, (name, r) in enumerate(results["augment"].items()):
            add("3 augmentation" if i == 0 else "", f"{name} (2 views + normalise)", r["views_per_s"], "views/s")
    if "logreg" in results:
        r = results["logreg"]
        add("4 logistic regression", "feature extraction, 3 splits", r["extract_total_seconds"], "s")
        add("", "  ... throughput", r["extract_images_per_s"], "images/s")
        add("", f"head: Trainer.fit ({r['train_updates']} AdamW updates + val)", r["train_seconds"], "s")
        add("", "  ... of which validation", r["validation_seconds"], "s")
        add("", "  ... per update, without validation", r["train_ms_per_update"], "ms")
        add("", "test", r["test_seconds"], "s")
        add("", "total", r["total_seconds"], "s")
        add("", "test accuracy (last epoch's head)", r["test_acc"])
        slow = r["slow_way"]
        add("", f"slow way: a Lightning step per update ({slow['updates']})", slow["train_seconds"], "s")
        add("", "  ... its test accuracy", slow["test_acc"])
    if "memory" in results:
        r = results["memory"]
        add("5 memory", "peak RSS of the process", r["peak_rss_mb"], "MB")
        if "large_set" in results:
            add("", "  ... as a share of the data set's images", 100 * r["peak_rss_mb"] / (
                results["large_set"]["images_bytes"] / 2**20), "%")
        if "cuda_peak_mb" in r:
            add("", "peak CUDA allocated", r["cuda_peak_mb"], "MB")
            for name, mb in r["cuda_peak_mb_by_section"].items():
                add("", f"  ... during {name}", mb, "MB")
    return rows


def format_table(results: dict) -> str:
    s, m = results["settings"], results["machine"]
    network = s["backbone"] + (f" ({s['stem']} stem)" if s["stem"] else "")
    size = f"{s['size']}^3 voxels" if known_dims(s["dataset"]) == 3 else f"{s['size']}px"
    title = (f"{s['method']} benchmark: {s['dataset']} {size}{' (SYNTHETIC data)' if s['synthetic'] else ''}, "
             f"batch {s['batch_size']} ({s['views_per_step']} views), {network}, aug {s['aug']}, {s['precision']}, "
             f"{'channels-last' if s['channels_last'] else 'contiguous'}{', compiled' if s['compile'] else ''}, "
             f"warm-up {s['warmup']} + {s['steps']} steps\n"
             f"on {m['device']} ({m['device_name']}), torch threads {m['torch_threads']}, {m['cpus_usable']} CPUs, "
             f"torch {m['torch']}, lightning {m['lightning']}, load average {fmt_load(m['load_average'])} "
             f"-> {fmt_load(m.get('load_average_end'))}")
    header = ("section", "measurement", "value", "unit")
    rows = [header] + table_rows(results)
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [title, ""]
    for i, row in enumerate(rows):
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}".rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=QUIET_WARNINGS)
            results = run(args)
    finally:
        torch.set_num_threads(threads)  # main() may run inside another program (the tests)
    print()
    print(format_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(results, indent=2, allow_nan=True) + "\n")
        print(f"\nwrote {args.json}")
    return results
