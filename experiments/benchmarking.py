"""The measurements of `scripts/benchmark.py`: a pretraining method's training speed, augmentation, the linear probe.

Every timed loop follows one rule: synchronise the device, read `time.perf_counter()`, run `steps` steps
without any further synchronisation, synchronise, read the clock again. Throughput is the work of those
steps over that interval. Per-step times (and their median, robust to a busy machine) are only reported
on the CPU, where they need no synchronisation.
"""
from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch

from common.evaluation import linear_probe as logreg
from common.augment.images import build_augmentation
from common.evaluation.classifier import ClassifierModule
from common.data.datamodule import MedMNISTDataModule
from common.evaluation.features import FeatureDataModule, extract_features
from common.training.memory_format import memory_format
from common.data.normalize import normalize, to_unit
from common.training.nonfinite import StopOnNonFiniteLoss
from common.training.trainer import peak_rss_mb
from models.backbones import build_backbone
from pretrain import method_class
from pretrain.base import PretrainModule, knn_monitor_metrics
from pretrain.cli import MONITOR_EVERY
from utils import seed_everything

AUTOCAST_DTYPES = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
MONITOR_RUNS = 3  # timed runs of the kNN monitor, after one untimed


@dataclass(frozen=True, kw_only=True)
class BenchmarkOptions:
    """experiments/benchmark.py's options, typed (its parse_args resolved the network and the sequence)."""
    dataset: str
    size: int
    data_dir: str
    synthetic: bool
    batch_size: int
    method: str
    backbone: str
    stem: str | None
    aug: str
    steps: int
    warmup: int
    accelerator: str
    precision: str
    compile: bool
    channels_last: bool
    lr_epochs: int
    skip: list[str]
    threads: int | None
    seed: int
    json: Path | None
    data_storage: str
    large_set: int | None
    large_dir: Path | None
    labels_from: str | None = None  # a folder's, as the stages read it (benchmark.py reads folders as they do)
    fit: str = "pad"
    window: str | None = None


# ------------------------------------------------------------------------------ timing helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(intervals: list[float], items_per_step: int, device: torch.device) -> dict:
    """intervals: seconds of each timed step."""
    steps, total = len(intervals), sum(intervals)
    result = {"steps": steps, "seconds": total, "per_s": items_per_step * steps / total,
              "step_ms": 1000 * total / steps}
    if device.type == "cpu":  # per-step readings are exact only without asynchronous kernels
        result["step_ms_median"] = 1000 * statistics.median(intervals)
    return result


def timed_loop(step, warmup: int, steps: int, device: torch.device) -> list[float]:
    """Seconds of each of `steps` calls of `step` after `warmup` untimed ones (synchronised only at both ends:
    on CUDA the single intervals are not exact, their sum is)."""
    for _ in range(warmup):
        step()
    sync(device)
    marks = [time.perf_counter()]
    for _ in range(steps):
        step()
        marks.append(time.perf_counter())
    sync(device)
    marks[-1] = time.perf_counter()
    return [b - a for a, b in zip(marks, marks[1:])]


@contextmanager
def quiet_lightning():
    """Hide Lightning's start-up notices (GPU available, ...) so that the table stays readable."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_count": os.cpu_count(), "cpus_usable": affinity, "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "torch": torch.__version__, "lightning": pl.__version__, "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# ------------------------------------------------------------------------------ 0. the loader alone
def loader_pass(data: MedMNISTDataModule, device: torch.device) -> dict:
    """One epoch of the training loader, each batch moved to `device` (as Lightning moves it), no model."""
    loader = data.train_dataloader()
    sync(device)
    start, images = time.perf_counter(), 0
    for batch, _ in loader:
        images += len(batch.to(device, non_blocking=True))
    sync(device)
    seconds = time.perf_counter() - start
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds, "peak_rss_mb": peak_rss_mb()}


# ------------------------------------------------------------------------------ 1. compute-only limit
def method_model(args: BenchmarkOptions, data: MedMNISTDataModule) -> PretrainModule:
    """The pretraining stage's module with the benchmark's settings (as pretrain/cli.py builds it).

    --compile compiles the encoder in place, as common.training.trainer.fit_and_save does for the stage's --compile,
    in both measurements (compiling the LightningModule would also compile training_step and its self.log).
    """
    model = method_class(args.method)(
        backbone=args.backbone, stem=args.stem, in_channels=data.num_channels, dataset=args.dataset, size=args.size,
        aug=args.aug, batch_size=args.batch_size, num_train=data.num_train(), seed=args.seed,
        channels_last=args.channels_last)
    if args.compile:
        model.encoder.compile()
    return model


class TrainingStep:
    """The compute-only step: the method's whole training step (its networks' forward, loss, backward, optimiser,
    and what the method does around them: momentum updates, queue) on fixed views, augmented and normalised
    in advance, already on the device; with the precision's autocast and loss scaling."""

    def __init__(self, args: BenchmarkOptions, model: PretrainModule, optimizer: torch.optim.Optimizer, channels: int):
        device = model.device
        generator = torch.Generator(device=device).manual_seed(args.seed)
        shape = (2 * args.batch_size, channels, *(args.size,) * (model.augment.dims))  # images, or volumes (3D)
        views = torch.rand(shape, generator=generator, device=device)
        self.views = normalize(views).contiguous(memory_format=model.memory_format)
        self.model, self.optimizer, self.device = model, optimizer, device
        self.dtype = AUTOCAST_DTYPES.get(args.precision)
        self.scaler = torch.amp.GradScaler(device.type) if args.precision == "16-mixed" else None

    def __call__(self) -> None:
        with torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else nullcontext():
            loss, _ = self.model.step(self.views, "train")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()


def compute_only(args: BenchmarkOptions, data: MedMNISTDataModule, device: torch.device) -> dict:
    """The compute-only limit alone (when the real path is skipped; otherwise they are measured together)."""
    seed_everything(args.seed)
    model = method_model(args, data).to(device)
    model.to(memory_format=model.memory_format).train()
    optimizers, _ = model.configure_optimizers()
    step = TrainingStep(args, model, optimizers[0], data.num_channels)
    result = throughput(timed_loop(step, args.warmup, args.steps, device), args.batch_size, device)
    result["images_per_s"] = result.pop("per_s")
    return result


# ------------------------------------------------------------------------------ 2. real pretraining path
class StepTimer(pl.Callback):
    """The seconds of each real step after the warm-up: from one batch end to the next, so each holds a whole
    step (batch slicing, transfer, augmentation, forward, backward, optimiser, Lightning's hooks).

    With `interleave`, one compute-only step (`TrainingStep`, on the same model and optimiser) runs after each
    batch and is timed on its own: the two measurements alternate step by step, so a change in the machine's
    speed (other load, clocks) during the run affects both alike. Each boundary synchronises the device.
    """

    def __init__(self, args: BenchmarkOptions, warmup: int, steps: int, interleave: bool, channels: int):
        self.args, self.warmup, self.steps, self.interleave, self.channels = args, warmup, steps, interleave, channels
        self.batches, self.mark, self.real, self.compute, self.training_step = 0, 0.0, [], [], None

    def on_train_start(self, trainer, pl_module) -> None:
        if self.interleave:
            self.training_step = TrainingStep(self.args, pl_module, trainer.optimizers[0], self.channels)
        sync(pl_module.device)
        self.mark = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        timed = self.batches > self.warmup
        sync(pl_module.device)
        now = time.perf_counter()
        if timed:
            self.real.append(now - self.mark)
        if self.training_step is not None:
            self.training_step()
            sync(pl_module.device)
            if timed:
                self.compute.append(time.perf_counter() - now)
            now = time.perf_counter()
        self.mark = now


def pretrain_path(args: BenchmarkOptions, data: MedMNISTDataModule, accelerator: str,
                  interleave: bool = True) -> dict:
    """The method under a real Trainer: MedMNISTDataModule (drop_last) + batched augmentation + its module, with
    the stages' per-step NaN check (a host sync on CUDA); without logger, checkpoints and progress bar.
    With `interleave`, also the compute-only limit, step by step in the same run (result["compute"])."""
    seed_everything(args.seed)
    model = method_model(args, data)
    timer = StepTimer(args, args.warmup, args.steps, interleave, data.num_channels)
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator=accelerator, devices=1, precision=args.precision, max_steps=args.warmup + args.steps,
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer, StopOnNonFiniteLoss()])
        start = time.perf_counter()
        trainer.fit(model, datamodule=data)
        fit_seconds = time.perf_counter() - start
    if len(timer.real) != args.steps:
        raise RuntimeError(f"the Trainer ran {timer.batches} batches, expected {args.warmup + args.steps}")
    device = trainer.strategy.root_device
    result = throughput(timer.real, data.batch_size, device)
    result["images_per_s"] = result.pop("per_s")
    result["fit_seconds"] = fit_seconds  # the whole fit: set-up, warm-up and timed steps (and compute-only ones)
    result["steps_per_epoch"] = len(data.train_dataloader())
    if interleave:
        compute = throughput(timer.compute, args.batch_size, device)
        compute["images_per_s"] = compute.pop("per_s")
        result["compute"] = compute
    return result


# ------------------------------------------------------------------------------ 3. augmentation alone
def augmentation(args: BenchmarkOptions, images: torch.Tensor, names, device: torch.device) -> dict:
    """What PretrainModule.on_after_batch_transfer does to a batch: uint8 -> 2 views -> normalised."""
    images = images.to(device)
    fmt = memory_format(images.dim() - 2, args.channels_last)
    results = {}
    for name in names:
        augment = build_augmentation(name, args.size).to(device)
        generator = torch.Generator(device=device).manual_seed(args.seed)

        def step():
            x = to_unit(images)
            views = torch.cat([augment(x, generator), augment(x, generator)])
            normalize(views).contiguous(memory_format=fmt)

        result = throughput(timed_loop(step, args.warmup, args.steps, device), 2 * len(images), device)
        result["views_per_s"] = result.pop("per_s")
        results[name] = result
    return results


# ------------------------------------------------------------------------------ 4. logistic regression


class ValidationTimer(pl.Callback):
    """Seconds spent in the validation loops of a fit."""

    def __init__(self):
        self.seconds, self.start = 0.0, 0.0

    def on_validation_start(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self.start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self.seconds += time.perf_counter() - self.start


def logreg_trainer(args: BenchmarkOptions, accelerator: str, callbacks: list) -> pl.Trainer:
    """As common.training.trainer.build_trainer configures it, without logger, checkpoints and progress bar."""
    callbacks = [*callbacks, StopOnNonFiniteLoss()]
    return pl.Trainer(
        max_epochs=args.lr_epochs, accelerator=accelerator, devices=1, precision=args.precision, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, check_val_every_n_epoch=1, num_sanity_val_steps=0,
        log_every_n_steps=10, enable_model_summary=False, callbacks=callbacks)


def extract_splits(features: FeatureDataModule, device: torch.device) -> dict:
    """What FeatureDataModule.setup does, split by split and timed; the Trainer's setup then finds them done."""
    seconds = {}
    for split, (images, labels) in features.data.splits.items():
        sync(device)
        start = time.perf_counter()
        features.features[split] = (extract_features(features.encoder, images, device), labels.to(device))
        sync(device)
        seconds[split] = time.perf_counter() - start
    return seconds


class PerStepHead(logreg.LogisticRegressionModule):
    """The slow way, as the study trained its head: one Lightning step (automatic optimisation) per
    minibatch. The same updates as the stage's module, for comparing time and test accuracy."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.automatic_optimization = True

    training_step = ClassifierModule.training_step

    def on_train_epoch_end(self) -> None:
        pass  # Lightning steps the scheduler itself under automatic optimisation


class PerStepFeatures(FeatureDataModule):
    def train_dataloader(self):
        return self._loader("train", logreg.BATCH_SIZE, shuffle=True)


def slow_way(args: BenchmarkOptions, data: MedMNISTDataModule, features: FeatureDataModule,
             accelerator: str) -> dict:
    """Train and test the head the slow way on the same cached features: seconds and test accuracy."""
    model = head(args, data, features.features["train"][0].shape[1], features.device, PerStepHead)
    slow = PerStepFeatures(data, features.encoder, device=features.device)
    slow.features = features.features
    with quiet_lightning():
        trainer = logreg_trainer(args, accelerator, [])
        start = time.perf_counter()
        trainer.fit(model, datamodule=slow)
        seconds = time.perf_counter() - start
        trainer.test(model, datamodule=slow, verbose=False)
    return {"train_seconds": seconds, "updates": trainer.global_step, "test_acc": model.test_results["acc"],
            "test_auroc": model.test_results["auroc"]}


def head(args: BenchmarkOptions, data: MedMNISTDataModule, feature_dim: int, device: torch.device,
         cls=logreg.LogisticRegressionModule):
    seed_everything(args.seed)
    return cls(
        feature_dim=feature_dim, num_classes=data.num_classes, multilabel=data.multilabel, dataset=args.dataset,
        max_epochs=args.lr_epochs, encoder="random", seed=args.seed,
        batch_size=min(logreg.BATCH_SIZE, data.num_train())).to(device)


def logistic_regression(args: BenchmarkOptions, data: MedMNISTDataModule, accelerator: str,
                        device: torch.device) -> dict:
    """The probe stage end to end: random-init encoder -> features of all splits -> head (Trainer) -> test."""
    torch.manual_seed(args.seed)  # as downstream/logistic_regression/train.frozen_encoder("random")
    encoder = build_backbone(args.backbone, data.num_channels, args.size, args.stem).requires_grad_(False)
    features = FeatureDataModule(data, encoder, device=device)
    extract = extract_splits(features, device)
    model, validation = head(args, data, encoder.feature_dim, device), ValidationTimer()
    with quiet_lightning():
        trainer = logreg_trainer(args, accelerator, [validation])
        start = time.perf_counter()
        trainer.fit(model, datamodule=features)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        trainer.test(model, datamodule=features, verbose=False)
        test_seconds = time.perf_counter() - start
    extract_total = sum(extract.values())
    steps = args.lr_epochs * -(-data.num_train() // model.hparams.batch_size)  # AdamW updates
    reference = slow_way(args, data, features, accelerator)
    return {
        "extract_seconds": extract, "extract_total_seconds": extract_total,
        "extract_images_per_s": sum(len(x) for x, _ in data.splits.values()) / extract_total,
        "train_seconds": train_seconds, "validation_seconds": validation.seconds, "test_seconds": test_seconds,
        "total_seconds": extract_total + train_seconds + test_seconds, "train_updates": steps,
        "train_ms_per_update": 1000 * (train_seconds - validation.seconds) / steps,
        "test_acc": model.test_results["acc"], "test_auroc": model.test_results["auroc"],
        "slow_way": reference,
    }


# ------------------------------------------------------------------------------ the kNN monitor
def monitor(args: BenchmarkOptions, data: MedMNISTDataModule, device: torch.device,
            epoch_seconds: float | None) -> dict:
    """One run of the online kNN monitor (PretrainModule.knn_monitor): the encoder's features of the unaugmented
    training and validation images, and the kNN classifier on them; its share of a training epoch."""
    seed_everything(args.seed)
    model = method_model(args, data).to(device)
    model.to(memory_format=model.memory_format)
    splits = {s: tuple(t.to(device) for t in data.splits[s]) for s in ("train", "val")}  # as setup() places them

    def step():
        knn_monitor_metrics(model.encoder, splits, data.num_classes, data.multilabel, device)

    seconds = throughput(timed_loop(step, 1, MONITOR_RUNS, device), 1, device)["seconds"] / MONITOR_RUNS
    result = {"seconds": seconds, "images": sum(len(x) for x, _ in splits.values()), "every_epochs": MONITOR_EVERY}
    if epoch_seconds:
        result.update(epoch_seconds=epoch_seconds, share_of_epoch=seconds / epoch_seconds,
                      share_at_default=seconds / epoch_seconds / MONITOR_EVERY)
    return result


# ------------------------------------------------------------------------------ 5. memory
def reset_cuda_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
