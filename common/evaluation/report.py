"""Test-split evaluation shared by every stage's test.py: metrics, a per-class table, `<name>.test.json`."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytorch_lightning as pl

from common.cli.options import DataOptions
from utils import atomic_write_text


def test_trainer(hardware: DataOptions, **overrides) -> pl.Trainer:
    """A Trainer for evaluation (or an unsaved probe) on `hardware`'s accelerator and precision: one device, no
    logger, no checkpoints."""
    devices = 1 if str(hardware.devices) == "auto" else int(hardware.devices)
    options = dict(accelerator=hardware.accelerator, devices=devices, precision=hardware.precision, logger=False,
                   enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
    return pl.Trainer(**{**options, **overrides})


def run_test(module: pl.LightningModule, datamodule: pl.LightningDataModule, hardware: DataOptions) -> dict:
    test_trainer(hardware).test(module, datamodule=datamodule, verbose=False)
    return dict(module.test_results)


def report(results: dict, class_names: list[str], checkpoint: Path, extra: dict) -> Path:
    """Print test ACC, AUROC and per-class accuracy; write them as JSON next to the checkpoint."""
    print(f"test ACC   {results['acc']:.4f}\ntest AUROC {results['auroc']:.4f}")
    width = max(len(n[:40]) for n in class_names)
    print(f"{'class':<{width}}  {'n':>6}  accuracy")
    for name, n, acc in zip(class_names, results["support"], results["per_class_acc"]):
        print(f"{name[:40]:<{width}}  {n:>6}  {'-' if math.isnan(acc) else f'{acc:.4f}'}")
    record = {**extra, "checkpoint": str(checkpoint), "split": "test", **results,
              "per_class": {n: a for n, a in zip(class_names, results["per_class_acc"])}}
    out = checkpoint.with_name(checkpoint.stem + ".test.json")
    atomic_write_text(out, json.dumps(record, indent=2, default=str).replace("NaN", "null") + "\n")
    print(f"wrote {out}")
    return out
