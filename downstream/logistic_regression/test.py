"""Test a logistic-regression head (on its frozen encoder) on the test split.

    python downstream/logistic_regression/test.py --dataset bloodmnist --checkpoint downstream-bloodmnist
"""
from __future__ import annotations

import json
from pathlib import Path

from common.cli.options import DataOptions, from_namespace
from common.evaluation.report import report, run_test
from common.evaluation.features import FeatureDataModule
from common.evaluation.linear_probe import LogisticRegressionModule
from common.evaluation.open_checkpoint import check_classes, open_checkpoint, test_parser
from downstream.logistic_regression.references import references
from downstream.logistic_regression.probe import IMAGENET, RANDOM, REFERENCES, frozen_encoder
from models.checkpoints import build_from_checkpoint
from models.feature_choice import LAST
from models.stages import read_features
from utils import UserError, run_cli


def build_parser():
    parser = test_parser("Test a logistic-regression head on the test split.")
    parser.add_argument("--encoder", default=None,
                        help="encoder checkpoint; default: the one the head records (the study's heads record none)")
    parser.add_argument("--no-references", action="store_true",
                        help="skip the reference rows (the same probe on the raw pixels, a random-init encoder and the "
                             "strongest untrained features)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    path, ckpt, data, hardware = open_checkpoint(from_namespace(DataOptions, args, subset=True), args.checkpoint,
                                                 ["logistic_regression"], ("logistic_regression",))
    head = build_from_checkpoint(LogisticRegressionModule, ckpt, f"--checkpoint {path.name}",
                                 multilabel=data.multilabel, dataset=data.flag)
    check_classes(head, data, path)
    reference = args.encoder or head.hparams.encoder
    if reference is None:
        raise UserError(f"{path.name} does not record its encoder", "pass --encoder pretrain-<dataset> or a path")
    network = ((head.hparams.backbone, head.hparams.stem, head.hparams.get("resize"), head.hparams.get("patch_topk"))
               if reference in (RANDOM, IMAGENET) else (None,) * 4)
    encoder, encoder_path = frozen_encoder(reference, data, head.hparams.seed, *network)
    encoder = read_features(encoder, head.hparams.get("features") or LAST)  # what the head was trained on
    features = FeatureDataModule(data, encoder, splits=("test",))
    results = run_test(head, features, hardware)
    beside = {}
    config = path.with_suffix(".config.json")
    if reference not in REFERENCES and not args.no_references and config.is_file():
        log = path.with_suffix(".references.log")
        print(f"the same probe on the raw pixels, a random-init encoder and the strongest untrained features "
              f"(chosen on val; trained once for these settings; output in {log}) ...", flush=True)
        options = json.loads(config.read_text())["options"]
        beside = references(options, data, encoder.backbone_options, hardware, log)
    report(results, data.class_names, path, {"stage": "logistic_regression", "dataset": data.flag,
                                             "encoder": str(encoder_path), "references": beside})
    if beside:
        print(f"{'encoder':<32}  test ACC  test AUROC")
        for tag, row in {Path(str(encoder_path)).stem: results, **beside}.items():
            chosen = row.get("chosen")
            about = f"  ({chosen['network']} {chosen['features']}, chosen on val)" if chosen else ""
            print(f"{tag[:32]:<32}  {row['acc']:8.4f}  {row['auroc']:10.4f}{about}")


if __name__ == "__main__":
    run_cli(main)
