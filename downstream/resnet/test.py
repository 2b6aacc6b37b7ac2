"""Test a finetuned or baseline ResNet on the test split.

    python downstream/resnet/test.py --dataset bloodmnist --checkpoint downstream-bloodmnist
"""
from __future__ import annotations

from common.evaluate import report, run_test
from common.testing import check_classes, open_checkpoint, test_parser
from downstream.resnet.module import ResNetClassifier
from models.checkpoints import build_from_checkpoint
from utils import run_cli


def main(argv=None):
    args = test_parser("Test a finetuned/baseline ResNet on the test split.").parse_args(argv)
    path, ckpt, data = open_checkpoint(args, "resnet")
    model = build_from_checkpoint(ResNetClassifier, ckpt, f"--checkpoint {path.name}",
                                  num_classes=ckpt["state_dict"].get("head.weight", ckpt["state_dict"].get(
                                      "backbone.fc.weight")).shape[0],
                                  multilabel=data.multilabel, dataset=data.flag)
    check_classes(model, data, path)
    results = run_test(model, data, args)
    report(results, data.class_names, path, {"stage": "resnet", "dataset": data.flag, "init": model.hparams.init})


if __name__ == "__main__":
    run_cli(main)
