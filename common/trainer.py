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
from importlib.metadata import version as package_version
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger

from utils import REPO_ROOT, models_dir, UserError, atomic_path, atomic_write_text


def final_checkpoint(stage: str, name: str) -> Path:
    return models_dir(stage) / f"{name}.ckpt"


def check_output(stage: str, name: str, overwrite: bool) -> Path:
    """Refuse to reuse or overwrite `<name>.ckpt` unless asked; fail early if the folder is read-only."""
    final = final_checkpoint(stage, name)
    if final.exists() and not overwrite:
        raise UserError(f"{final} already exists", "pass --overwrite to replace it, or choose another --name")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(final.parent / ".write-test") as probe:
            probe.write_text("")
        (final.parent / ".write-test").unlink()
    except OSError as err:
        raise UserError(f"cannot write to {final.parent} ({err.strerror})", "fix its permissions") from None
    return final


def build_trainer(stage: str, name: str, args, monitor: str, mode: str, **overrides) -> pl.Trainer:
    """A Trainer logging to TensorBoard and keeping the best (by `monitor`) and last checkpoints."""
    logger = TensorBoardLogger(models_dir(stage) / "tb_logs", name=name, default_hp_metric=False)
    best = ModelCheckpoint(
        filename="epoch={epoch}-step={step}-" + monitor.replace("/", "_") + "={" + monitor + ":.4f}",
        monitor=monitor, mode=mode, save_top_k=1, save_last=True, auto_insert_metric_name=False,
    )
    options = dict(
        max_epochs=args.epochs,
        accelerator=args.accelerator,
        devices=int(args.devices) if str(args.devices).isdigit() else args.devices,
        precision=args.precision,
        logger=logger,
        callbacks=[best, TQDMProgressBar(refresh_rate=10)],
        check_val_every_n_epoch=args.val_every,
        num_sanity_val_steps=0,  # data are in memory and checked on load; validation costs an epoch's time
        log_every_n_steps=10,
        enable_model_summary=False,
    )
    options.update(overrides)
    return pl.Trainer(**options)


def best_checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint:
    return next(cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint))


def finish_run(trainer: pl.Trainer, stage: str, name: str, config: dict) -> Path:
    """Copy the run's best checkpoint (or its last, if it never validated) to `<name>.ckpt`, atomically."""
    callback = best_checkpoint_callback(trainer)
    source = callback.best_model_path or callback.last_model_path
    final = final_checkpoint(stage, name)
    if trainer.global_rank == 0:
        with atomic_path(final) as tmp:
            shutil.copyfile(source, tmp)
        write_config(final.with_suffix(".config.json"), config, trainer, source)
        score = callback.best_model_score
        best = f" ({callback.monitor} = {float(score):.4f})" if score is not None else ""
        print(f"saved {final}{best}\n  from {source}\n  TensorBoard: tensorboard --logdir {final.parent / 'tb_logs'}")
    return final


def write_config(path: Path, config: dict, trainer: pl.Trainer, source: str) -> None:
    """The resolved configuration: options, data file md5, package versions, git commit."""
    data_file = config.get("data_file")
    record = {
        "options": config,
        "data_md5": file_md5(data_file) if data_file and Path(data_file).is_file() else None,
        "checkpoint_source": str(source),
        "tensorboard_dir": trainer.logger.log_dir if trainer.logger else None,
        "versions": {p: package_version(p) for p in ("torch", "torchvision", "pytorch-lightning", "medmnist")},
        "git_commit": git_commit(),
    }
    atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")


def file_md5(path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=5, env={**os.environ, "GIT_DIR": str(REPO_ROOT / ".git")})
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def fit_and_save(stage: str, name: str, args, model: pl.LightningModule, datamodule: pl.LightningDataModule,
                 monitor: str, mode: str, config: dict) -> Path:
    """Train with the shared Trainer, then save the best checkpoint as `<name>.ckpt`."""
    trainer = build_trainer(stage, name, args, monitor, mode)
    trainer.fit(model, datamodule=datamodule)
    if trainer.interrupted:
        raise UserError("training was interrupted", f"{final_checkpoint(stage, name)} was not written; "
                        f"checkpoints so far are in {trainer.logger.log_dir}")
    return finish_run(trainer, stage, name, config)
