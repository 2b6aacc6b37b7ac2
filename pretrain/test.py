"""Test a pretrained encoder of any method: its own loss and metrics on the test split, and a linear probe's
test ACC/AUROC.

The probe is a logistic-regression head trained on the frozen features of the train split (the
study's settings), evaluated once on the test split; nothing is selected on test.

    python pretrain/test.py --checkpoint pretrain-bloodmnist
    python pretrain/test.py --checkpoint pretrain/moco/models/moco-bloodmnist.ckpt
"""
from __future__ import annotations

from common.cli.options import DataOptions, from_namespace
from common.evaluation import linear_probe
from common.cli.parsers import POSITIVE_INT
from common.evaluation.report import report, run_test, test_trainer
from common.evaluation.features import FeatureDataModule
from common.evaluation.open_checkpoint import open_checkpoint, test_parser
from models.backbones import require_reads
from models.checkpoints import PRETRAINED, build_from_checkpoint, checkpoint_kind
from pretrain import method_class
from utils import pretrain_stages, run_cli


def build_parser():
    parser = test_parser("Test a pretrained encoder (any method) on the test split.")
    parser.add_argument("--probe-epochs", type=POSITIVE_INT, default=linear_probe.EPOCHS,
                        help="epochs of the linear probe on frozen train features")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    path, ckpt, data, hardware = open_checkpoint(from_namespace(DataOptions, args, subset=True), args.checkpoint,
                                                 pretrain_stages(), (PRETRAINED,))
    method = method_class(checkpoint_kind(ckpt))
    model = build_from_checkpoint(method, ckpt, f"--checkpoint {path.name}")
    require_reads(model.encoder, data.num_channels, data.size, f"--checkpoint {path.name}",
                  "pass the --dataset and --size it was trained on", data.dims)
    trainer = test_trainer(hardware)
    own = {k.split("/")[1]: float(v) for k, v in trainer.test(model, datamodule=data, verbose=False)[0].items()}
    print(f"test {method.TITLE}: " + ", ".join(f"{k} {v:.4f}" for k, v in own.items()))
    if data.unlabelled:
        print(f"note: {data.flag} has no labels: no linear probe (give --labels-from labels.csv for one)")
        return
    features = FeatureDataModule(data, model.encoder.requires_grad_(False))
    probe = linear_probe.LogisticRegressionModule(model.encoder.feature_dim, data.num_classes, data.multilabel,
                                                  data.flag, max_epochs=args.probe_epochs)
    test_trainer(hardware, max_epochs=args.probe_epochs, limit_val_batches=0).fit(probe, datamodule=features)
    results = run_test(probe, features, hardware)
    report(results, data.class_names, path, {"method": method.NAME, "dataset": data.flag,
                                             "probe": "logistic regression", "probe_epochs": args.probe_epochs,
                                             "pretraining": own})


if __name__ == "__main__":
    run_cli(main)
