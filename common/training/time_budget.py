"""--time-budget: a run's epochs (and so its cosine schedule) fitted to a wall-clock budget, the run stopped there,
and what it achieved recorded, so that runs are compared at equal wall time.

Before the real fit the run times its own steps (`timed_steps`) and checkpoint saves (`timed_save`) on a copy of
its model (pretrain/run.py's `calibrate`), leaving the model and every random generator as they were
(`preserved_rng`). At the Trainer's set-up `TimeBudget` turns the seconds left into the most epochs that fit
(`epochs_for_budget`), which the schedule then runs over, and it stops training when the budget is spent: it is
Lightning's `Timer` (what `Trainer(max_time=...)` builds) with its clock started at the calibration, not at the
first step, so that calibration and set-up count too. A calibration is a few steps, timed while the machine may be
busier or quieter than it will be: through the first half of the plan, each epoch's end plans again from what the
epochs really took (`TimeBudget.replan`), moving the schedule's end (and so the cosine's length) to the new plan.
"""
from __future__ import annotations

import os
import random
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.trainer.states import RunningStage

from common.training.checkpoint_io import AtomicCheckpointIO

WARMUP_STEPS = 2  # ours: untimed first steps (allocations, cuDNN's algorithm search, lazy initialisation)
TIMED_STEPS = 5  # ours: enough for a mean within a few per cent on a quiet machine, a second for a small CNN on a CPU
FEATURE_SAMPLE = 1024  # ours: images encoded to time the kNN monitor's encoding (one FEATURE_BATCH of common.evaluation.features)
# ours: the share of the seconds left that the epochs are planned to fill, so that an estimate a few per cent short
# (Lightning's hooks and logging are not in the timed steps: 2-7% of a step in scripts/benchmark.py; a busy
# machine) still lets the schedule end before the clock stops it
PLAN_SHARE = 0.95
# ours: Lightning's per-epoch work besides checkpoints (loader, epoch metrics, event flush): 0.01-0.02 s measured
# with the small CNN on this 2-core CPU
EPOCH_FIXED_S = 0.02
STOP_SAVES = 3  # checkpoint saves after the clock stops training: last.ckpt, the best one, the final copy
# ours: the share of the budget the training steps' calibration may take; past it, it stops at the step it is in
# (one untimed and one timed step at least): a network whose step takes minutes on this machine is timed in two
# steps, not seven (a ViT at 64 px took 7 x 148 s under a 4-minute budget before)
CALIBRATION_SHARE = 0.1
# ours: the share of the planned epochs through which each epoch's end plans again from the epochs' measured time.
# Runs planned from a calibration timed while another run was starting used 62-90% of 30-minute budgets
# (docs/recipes/confirmation30.md); after half the plan the schedule's tail stays as planned
REPLAN_SHARE = 0.5


@dataclass
class Calibration:
    """What a run measured of itself before its fit."""

    seconds_per_step: float  # one optimisation step: the batch's views, forward, backward, optimiser
    warmup_extra_s: float  # the first steps' seconds beyond as many steady ones: the real run pays them again
    validation_s: float  # one validation: the method's val loop and the kNN monitor's encoding of train and val
    checkpoint_s: float  # one checkpoint save (model and optimiser, written and fsynced)
    seconds: float  # the calibration's own


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step: Callable[[], None], device: torch.device, warmup: int = WARMUP_STEPS,
                steps: int = TIMED_STEPS, limit_s: float | None = None) -> tuple[float, float]:
    """(seconds per call of `step`, over `steps` calls after `warmup` untimed ones; the warm-up's seconds beyond
    as many steady calls). The device is synchronised at both ends of each phase only, as scripts/benchmark.py
    times; with `limit_s`, after every call too, and each phase ends early (after one call at least) once the
    calls have taken `limit_s` in all."""
    def over() -> bool:
        if limit_s is None:
            return False
        sync(device)
        return time.perf_counter() - start > limit_s

    sync(device)
    start = time.perf_counter()
    warmed = 0
    while warmed < warmup:
        step()
        warmed += 1
        if over():
            break
    sync(device)
    warm = time.perf_counter()
    timed = 0
    while timed < max(1, steps):
        step()
        timed += 1
        if over():
            break
    sync(device)
    per_step = (time.perf_counter() - warm) / timed
    return per_step, max(0.0, warm - start - warmed * per_step)


def timed_save(state: dict, folder: Path) -> float:
    """Seconds to save `state` as the run saves its checkpoints (common.training.checkpoint_io.AtomicCheckpointIO: a temporary
    file, fsync, rename), in `folder`, where the run will write them; the file is deleted."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".time-budget-") as scratch:
        start = time.perf_counter()
        AtomicCheckpointIO().save_checkpoint(state, Path(scratch) / "calibration.ckpt")
        return time.perf_counter() - start


@contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Python's, NumPy's and torch's (CPU and `device`'s CUDA) random states are as they were after the block."""
    python, numpy = random.getstate(), np.random.get_state()
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)


def calibration_device(accelerator: str) -> torch.device:
    """Where this process will train: its GPU (by its local rank under torchrun, Lightning's launcher or SLURM)
    when --accelerator allows one and there is one, else the CPU."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0))))
    if accelerator == "mps":
        return torch.device("mps")
    return torch.device("cpu")


def steps_per_epoch(n_train: int, batch_size: int, world_size: int = 1) -> int:
    """Optimisation steps of an epoch on each device: common.data.datamodule's training loader with drop_last (each device
    takes n_train // world_size images, in batches of at most that many)."""
    per_device = n_train // world_size
    return per_device // max(1, min(batch_size, per_device))


def epochs_seconds(epochs: int, seconds_per_step: float, steps: int, validation_s: float, validate_every: int,
                   overhead_s: float) -> float:
    """The estimated seconds of `epochs` epochs: E * (steps * seconds_per_step + overhead_s) + (E // validate_every)
    * validation_s."""
    return epochs * (steps * seconds_per_step + overhead_s) + (epochs // validate_every) * validation_s


def epochs_for_budget(budget_s: float, seconds_per_step: float, steps: int, validation_s: float,
                      validate_every: int, overhead_s: float) -> int:
    """The most epochs E whose estimated time fits `budget_s`, at least 1:

        E * (steps * seconds_per_step + overhead_s) + (E // validate_every) * validation_s <= budget_s

    (`steps` per epoch, `overhead_s` per epoch, a validation after every `validate_every`-th epoch, as Lightning's
    check_val_every_n_epoch runs them)."""
    per_epoch = steps * seconds_per_step + overhead_s

    def cost(epochs: int) -> float:
        return epochs_seconds(epochs, seconds_per_step, steps, validation_s, validate_every, overhead_s)

    epochs = max(1, int(budget_s // (per_epoch + validation_s / validate_every)))  # cost(epochs) fits: E // v <= E / v
    while cost(epochs + 1) <= budget_s:  # the mean cost above charges a part of the next, unrun validation
        epochs += 1
    while epochs > 1 and cost(epochs) > budget_s:
        epochs -= 1
    return epochs


class TimeBudget(Timer):
    """Lightning's Timer, stepwise, with its clock started at `started` (time.monotonic() before the calibration).
    At set-up it plans the epochs to fit the budget (capped at `cap`), sets the Trainer's and the module's
    max_epochs to them (the module's schedule reads hparams.max_epochs), every process taking rank 0's plan;
    through the first half of the plan each epoch's end plans them again from the epochs' measured time; it stops
    training once the budget less the time to validate and save after the stop is spent; at the end of
    training it records what the run achieved in `record` (a dict the run's config record holds)."""

    def __init__(self, minutes: float, started: float, calibration: Calibration, n_train: int, batch_size: int,
                 validate_every: int, saves_per_epoch: float = 1.0, cap: int | None = None):
        self.budget_s, self.started, self.calibration = minutes * 60, started, calibration
        self.reserve_s = calibration.validation_s + STOP_SAVES * calibration.checkpoint_s
        super().__init__(duration=timedelta(seconds=max(0.0, self.budget_s - self.reserve_s)), interval="step",
                         verbose=False)
        self.n_train, self.batch_size, self.validate_every = n_train, batch_size, validate_every
        self.saves_per_epoch, self.cap = saves_per_epoch, cap
        self.epochs_started: float | None = None  # time.monotonic() at the first epoch's start
        self.record = {"minutes": minutes, **{k: round(v, 4) for k, v in asdict(calibration).items()}}
        self.record["calibration_s"] = self.record.pop("seconds")

    def time_elapsed(self, stage: str = RunningStage.TRAINING) -> float:
        """Training's seconds count from the calibration's start: the budget is the whole run's."""
        if RunningStage(stage) != RunningStage.TRAINING:
            return super().time_elapsed(stage)
        end = self.end_time(stage)
        return (time.monotonic() if end is None else end) - self.started

    def plan(self, elapsed_s: float, world_size: int, scale: float = 1.0, warmup: bool = True) -> tuple[int, int]:
        """(epochs, steps per epoch) that fit the seconds left after `elapsed_s` (not capped), every calibrated
        cost multiplied by `scale`; `warmup`: the first steps' extra seconds are still to be paid."""
        c, steps = self.calibration, steps_per_epoch(self.n_train, self.batch_size, world_size)
        left = (self.budget_s - elapsed_s - self.reserve_s) * PLAN_SHARE - (c.warmup_extra_s if warmup else 0.0)
        overhead, validation = self.epoch_costs()
        return epochs_for_budget(left, c.seconds_per_step * scale, steps, validation * scale, self.validate_every,
                                 overhead * scale), steps

    def epoch_costs(self) -> tuple[float, float]:
        """(seconds of an epoch besides its steps, seconds of a validation) by the calibration."""
        c = self.calibration
        return self.saves_per_epoch * c.checkpoint_s + EPOCH_FIXED_S, c.validation_s + c.checkpoint_s

    def predicted_s(self, epochs: int, steps: int) -> float:
        """The calibration's estimate of `epochs` epochs' seconds, the first steps' extra ones included."""
        overhead, validation = self.epoch_costs()
        c = self.calibration
        return (epochs_seconds(epochs, c.seconds_per_step, steps, validation, self.validate_every, overhead)
                + c.warmup_extra_s)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        elapsed = self.time_elapsed()
        fitting, steps = trainer.strategy.broadcast(self.plan(elapsed, trainer.world_size))  # rank 0's, everywhere
        epochs = min(fitting, self.cap) if self.cap else fitting
        trainer.fit_loop.max_epochs = pl_module.hparams.max_epochs = epochs  # before configure_optimizers reads it
        self.record.update(planned_at_s=round(elapsed, 3), planned_epochs=epochs, fitting_epochs=fitting,
                           steps_per_epoch=steps, first_planned_epochs=epochs, replans=0, time_scale=1.0)
        if trainer.is_global_zero:
            capped = f" (--epochs {self.cap} of the {fitting} that fit)" if epochs < fitting else ""
            print(f"--time-budget {self.record['minutes']:g} min: {self.calibration.seconds_per_step:.3g} s/step, "
                  f"{steps} steps/epoch, {self.calibration.validation_s:.2g} s/validation -> {epochs} epochs"
                  f"{capped} (cosine schedule over them)")

    def on_fit_start(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        """Timer checks a resumed clock here; this one trains at least one step, however little budget is left."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.epochs_started is None:
            self.epochs_started = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self.replan(trainer, pl_module)

    def replan(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Within the first REPLAN_SHARE of the planned epochs: the epochs again, from the seconds the epochs so far
        really took against the calibration's estimate of them (one factor, `time_scale`, on every calibrated
        cost), rank 0's on every process; the Trainer's, the module's and the cosine schedule's length moved to
        them. The schedule is CosineAnnealingLR's recursive form, so the learning rate goes on from where it is and
        reaches its floor at the new end. The condition reads only what every process shares (the epoch, the
        broadcast plan), so every process calls the broadcast."""
        done, planned = trainer.current_epoch + 1, self.record["planned_epochs"]
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
        if (trainer.should_stop or done >= planned or done > REPLAN_SHARE * planned or not schedulers
                or not all(isinstance(s, torch.optim.lr_scheduler.CosineAnnealingLR) for s in schedulers)):
            return
        steps = self.record["steps_per_epoch"]
        scale = (time.monotonic() - self.epochs_started) / self.predicted_s(done, steps)
        more, _ = self.plan(self.time_elapsed(), trainer.world_size, scale, warmup=False)
        fitting, scale = trainer.strategy.broadcast((done + more, scale))
        epochs = min(fitting, self.cap) if self.cap else fitting
        self.record.update(fitting_epochs=fitting, time_scale=round(scale, 4))
        if epochs == planned:
            return
        trainer.fit_loop.max_epochs = pl_module.hparams.max_epochs = epochs
        for scheduler in schedulers:
            scheduler.T_max = epochs
        self.record.update(planned_epochs=epochs, replans=self.record["replans"] + 1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        planned, steps = self.record["planned_epochs"], trainer.num_training_batches
        done = trainer.global_step
        self.record.update(epochs_run=round(done / steps, 3) if steps else 0.0, steps_run=done,
                           wall_s=round(self.time_elapsed(), 3), stopped_by_budget=done < planned * steps)
        if trainer.is_global_zero:
            how = "stopped by the budget" if self.record["stopped_by_budget"] else "the schedule complete"
            first = self.record["first_planned_epochs"]
            replanned = (f", re-planned from {first} (the epochs took {self.record['time_scale']:.2f}x the "
                         f"calibration's estimate)" if planned != first else "")
            print(f"--time-budget {self.record['minutes']:g} min: {self.record['epochs_run']:g} of {planned} epochs "
                  f"({done} steps) in {self.record['wall_s']:.1f} s, {how}{replanned}")
