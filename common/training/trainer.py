"""Trainer, TensorBoard logger and checkpoints, set up once for every stage.

Layout of a run NAME of a stage (STAGE = pretrain/simclr, downstream/...):
    STAGE/models/NAME.ckpt                        the final model (best by the monitored val metric)
    STAGE/models/NAME.config.json                 the resolved configuration of the run
    STAGE/models/tb_logs/NAME/version_V/          TensorBoard events of each attempt
    STAGE/models/tb_logs/NAME/version_V/checkpoints/epoch=E-step=S-<metric>=<value>.ckpt, last.ckpt
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version as package_version
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger

from common.training import run_lock
from common.training.options import TrainerOptions
from common.training.hardware import check_precision
from common.training.callbacks import FlushLogsWithCheckpoints, SaveConfig
from common.training.checkpoint_io import MB, AtomicCheckpointIO, free_bytes, tensor_bytes, write_failure
from common.training.nonfinite import StopOnNonFiniteLoss
from utils import OUTPUT_ROOT_VARIABLE, REPO_ROOT, UserError, atomic_path, atomic_write_text, models_dir


def peak_rss_mb() -> float | None:
    """The largest resident memory this process has had, in MiB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def peak_memory(device: torch.device) -> dict[str, float | None]:
    """Peak memory of the run so far: the process's resident memory and, on CUDA, the memory torch allocated."""
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"peak_rss_mb": peak_rss_mb(), "peak_cuda_allocated_mb": cuda}


def final_checkpoint(stage: str, name: str) -> Path:
    return models_dir(stage) / f"{name}.ckpt"


def check_output(stage: str, name: str, overwrite: bool, resume: bool = False) -> Path:
    """Refuse to reuse or overwrite `<name>.ckpt` unless asked; fail early (creating nothing) if the
    models folder cannot be written."""
    final = final_checkpoint(stage, name)
    if final.exists() and not overwrite:
        fix = "pass --overwrite to train it further" if resume else "pass --overwrite to replace it, or choose another --name"
        raise UserError(f"{final} already exists", fix)
    existing = next(p for p in [final.parent, *final.parent.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {final.parent} ({existing} is not a writable folder)",
                        f"fix its permissions or set {OUTPUT_ROOT_VARIABLE} to a writable folder")
    run_lock.hold(final.parent, name)  # until finish_run has written <name>.ckpt and its config
    return final


def prune_hpc_checkpoints(runs: Path, keep: Path) -> None:
    """Only the newest of Lightning's hpc_ckpt_<N>.ckpt (one per SLURM pre-emption, each a full checkpoint) stays;
    `keep` (what the run resumes from) always stays."""
    hpc = sorted(runs.glob("hpc_ckpt_*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    for old in hpc[:-1]:
        if old != keep:
            old.unlink(missing_ok=True)


def resume_point(stage: str, name: str) -> tuple[int, Path]:
    """(version, checkpoint) to continue run `name` from: the newest of every attempt's last.ckpt and the
    hpc_ckpt_<N>.ckpt that Lightning saves in the run's folder when SLURM signals the end of a job (SIGUSR1);
    the version is the last.ckpt's, or for an hpc checkpoint the newest attempt's."""
    runs = models_dir(stage) / "tb_logs" / name
    versions = {int(p.name.split("_")[1]): p for p in runs.glob("version_*") if p.name.split("_")[1].isdigit()}
    saved = [(p.stat().st_mtime_ns, p) for p in
             [*(v / "checkpoints" / "last.ckpt" for v in versions.values()), *runs.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    if not saved:
        raise UserError(f"--resume: run {name} has no checkpoint to resume from in {runs}",
                        "start it without --resume, or give the --name of the interrupted run")
    newest = max(saved)[1]
    prune_hpc_checkpoints(runs, keep=newest)
    if newest.name == "last.ckpt":
        return int(newest.parent.parent.name.split("_")[1]), newest
    return max(versions, default=0), newest


def build_trainer(stage: str, name: str, run: TrainerOptions, monitor: str | None, mode: str,
                  record: dict | None = None, version: int | None = None, callbacks: list | tuple = (),
                  **overrides) -> pl.Trainer:
    """A Trainer logging to TensorBoard, keeping the best (by `monitor`; none without one) checkpoint and a
    `last.ckpt` saved every epoch (and every --checkpoint-every-n-steps), written atomically."""
    check_precision(str(run.precision), str(run.accelerator))
    logger = TensorBoardLogger(models_dir(stage) / "tb_logs", name=name, version=version, default_hp_metric=False)
    latest = ModelCheckpoint(filename="last", monitor=None, save_top_k=1, enable_version_counter=False,
                             save_on_train_epoch_end=True, every_n_train_steps=run.checkpoint_every_n_steps)
    callbacks = [latest, StopOnNonFiniteLoss(), FlushLogsWithCheckpoints(), TQDMProgressBar(refresh_rate=10),
                 *callbacks]
    if monitor is not None:
        callbacks.insert(0, ModelCheckpoint(
            filename="epoch={epoch}-step={step}-" + monitor.replace("/", "_") + "={" + monitor + ":.4f}",
            monitor=monitor, mode=mode, save_top_k=1, auto_insert_metric_name=False))
    if record is not None:
        callbacks.append(SaveConfig(record))
    options = dict(
        max_epochs=run.epochs,
        accelerator=run.accelerator,
        devices=int(run.devices) if str(run.devices).isdigit() else run.devices,
        num_nodes=run.num_nodes,
        sync_batchnorm=False,  # pretraining's on GPUs: trainer_options; Lightning applies it on several devices
        precision=run.precision,
        logger=logger,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        check_val_every_n_epoch=run.val_every,
        num_sanity_val_steps=0,  # data are in memory and checked on load; validation costs an epoch's time
        log_every_n_steps=10,
        enable_model_summary=False,
        deterministic=run.deterministic,
        default_root_dir=models_dir(stage) / "tb_logs" / name,  # where Lightning saves hpc_ckpt_<N>.ckpt on SLURM
    )
    options.update(overrides)
    return pl.Trainer(**options)


def best_checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    return next((cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor is not None), None)


def latest_checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint:
    return next(cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor is None)


def finish_run(trainer: pl.Trainer, stage: str, name: str, record: dict) -> Path:
    """Copy the run's best checkpoint (or its last, if it never validated or monitors nothing) to `<name>.ckpt`,
    atomically."""
    callback = best_checkpoint_callback(trainer)
    source = (callback and callback.best_model_path) or latest_checkpoint_callback(trainer).best_model_path
    if not source:
        raise UserError("training saved no checkpoint (it ran no training step)",
                        "check --samples, --batch-size and --devices against the size of the training split")
    final = final_checkpoint(stage, name)
    if trainer.global_rank == 0:
        try:
            with atomic_path(final) as tmp:
                shutil.copyfile(source, tmp)
        except OSError as err:
            failure = write_failure(err, final, Path(source).stat().st_size)
            if failure is None:
                raise
            raise failure from None
        memory = peak_memory(trainer.strategy.root_device)
        write_config(final.with_suffix(".config.json"), {**record, **memory}, trainer, source)
        score = callback.best_model_score if callback else None
        best = f" ({callback.monitor} = {float(score):.4f})" if score is not None else " (the last epoch's)"
        used = ", ".join(f"{what} {mb / 1024:.1f} GiB" for what, mb in
                         (("RAM", memory["peak_rss_mb"]), ("GPU", memory["peak_cuda_allocated_mb"])) if mb is not None)
        print(f"saved {final}{best}\n  from {source}\n  TensorBoard: tensorboard --logdir {final.parent / 'tb_logs'}"
              + (f"\n  peak memory: {used}" if used else ""))
        run_lock.release(final.parent, name)
    trainer.strategy.barrier("finish_run")  # no process goes on (to a next stage) before the files are written
    return final


def config_record(options: dict, about: dict) -> dict:
    """The resolved configuration: the run's options (what --config takes back: the command's options, nothing
    else), what the run derived from them (`about`: method, data file, network, ...), the data file's md5, package
    versions, git commit."""
    data_file = about.get("data_file")
    return {
        "options": {key: value for key, value in options.items() if key not in ("config", "print_config")},
        **about,
        "data_md5": file_md5(data_file) if data_file and Path(data_file).is_file() else None,
        "versions": {p: package_version(p) for p in ("torch", "torchvision", "pytorch-lightning", "medmnist")},
        "git_commit": git_commit(),
    }


def write_config(path: Path, record: dict, trainer: pl.Trainer, source: str) -> None:
    """The record, with the checkpoint it chose, what selected it and that checkpoint's validation metrics
    (those its module saved with it, as pretraining does)."""
    callback = best_checkpoint_callback(trainer)
    saved = torch.load(source, map_location="cpu", weights_only=True).get("validation_metrics")
    record = {**record, "checkpoint_source": str(source),
              "selected_by": callback.monitor if callback and callback.best_model_path else "the last epoch",
              "selected_validation_metrics": saved,
              "tensorboard_dir": trainer.logger.log_dir if trainer.logger else None}
    atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")


def file_md5(path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


CHECKPOINT_COPIES = 3  # ours: last.ckpt, the best one and the final <name>.ckpt live at once (plus one being written)
ADAM_STATES = 2  # AdamW's moments: a checkpoint holds the weights and two tensors like them


def check_space(final: Path, model: pl.LightningModule) -> None:
    """A one-line error before training when the folder has less free space than the run's checkpoints need
    (CHECKPOINT_COPIES of the weights with their optimiser state)."""
    one = tensor_bytes(model.state_dict()) * (1 + ADAM_STATES)
    need = CHECKPOINT_COPIES * one
    free = free_bytes(final.parent)
    if free < need:
        raise UserError(f"no space left on {final.parent} ({free / MB:.0f} MB free; the run's checkpoints need about "
                        f"{need / MB:.0f} MB, {one / MB:.0f} MB each)", "free some space, or set "
                        f"{OUTPUT_ROOT_VARIABLE} to a folder with room")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=5, env={**os.environ, "GIT_DIR": str(REPO_ROOT / ".git")})
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def fit_and_save(stage: str, name: str, run: TrainerOptions, options: dict, model: pl.LightningModule,
                 datamodule: pl.LightningDataModule, monitor: str | None, mode: str, about: dict,
                 callbacks: list | tuple = (), trainer_options: dict | None = None) -> Path:
    """Train with the shared Trainer as `run` says (continuing the last attempt with --resume), then save the best
    checkpoint as `<name>.ckpt`. The record beside it holds `options` (the command's options: a rerun's --config)
    and `about` (what the run derived from them)."""
    version, last = resume_point(stage, name) if run.resume else (None, None)
    check_space(final_checkpoint(stage, name), model)
    record = config_record({**options, "name": name}, about)  # hashes the data file once
    trainer = build_trainer(stage, name, run, monitor, mode, record=record, version=version, callbacks=callbacks,
                            **(trainer_options or {}))
    if run.compile and hasattr(model, "encoder"):
        model.encoder.compile()  # in place: state-dict keys stay as they are
    if last is not None and trainer.global_rank == 0:
        print(f"resuming {name} from {last}")
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(last) if last else None)
    if trainer.interrupted:
        raise UserError(f"training was interrupted; {final_checkpoint(stage, name)} was not written",
                        "run the same command with --resume to continue from the last checkpoint")
    return finish_run(trainer, stage, name, record)
