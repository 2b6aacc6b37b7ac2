"""Test a finetuned or baseline classifier on the test split.

    python downstream/resnet/test.py --dataset bloodmnist --checkpoint downstream-bloodmnist
"""
from __future__ import annotations

from pathlib import Path

from common.data.datamodule import MedMNISTDataModule
from common.evaluation.report import report, run_test
from common.evaluation.open_checkpoint import check_classes, open_checkpoint, test_parser
from downstream.resnet.module import FinetuneClassifier
from models.backbones import require_reads
from models.checkpoints import build_from_checkpoint, our_state_dict
from utils import run_cli


def finetuned(path: Path, ckpt: dict, data: MedMNISTDataModule) -> FinetuneClassifier:
    """The classifier saved as `path` (its checkpoint `ckpt`), checked against the data set."""
    head = our_state_dict(ckpt).get("head.weight")  # missing: load_weights names it
    model = build_from_checkpoint(FinetuneClassifier, ckpt, f"--checkpoint {path.name}",
                                  num_classes=data.num_classes if head is None else head.shape[0],
                                  multilabel=data.multilabel, dataset=data.flag)
    check_classes(model, data, path)
    require_reads(model.encoder, data.num_channels, data.size, f"--checkpoint {path.name}",
                  "pass the --dataset and --size it was trained on", data.dims)
    return model


def build_parser():
    return test_parser("Test a finetuned/baseline classifier on the test split.")


def main(argv=None):
    args = build_parser().parse_args(argv)
    path, ckpt, data = open_checkpoint(args, ["resnet"], ("resnet",))
    model = finetuned(path, ckpt, data)
    results = run_test(model, data, args)
    report(results, data.class_names, path, {"stage": "resnet", "dataset": data.flag, "init": model.hparams.init})


if __name__ == "__main__":
    run_cli(main)
