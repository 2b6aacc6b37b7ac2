"""Test a SimCLR encoder: contrastive metrics on the test split, and a linear probe's test ACC/AUROC.

The probe is a logistic-regression head trained on the frozen features of the train split (the
study's settings), evaluated once on the test split; nothing is selected on test.

    python pretrain/simclr/test.py --dataset bloodmnist --checkpoint pretrain-bloodmnist
"""
from __future__ import annotations

from common.evaluate import report, run_test, test_trainer
from common.features import FeatureDataModule
from common.testing import open_checkpoint, test_parser
from downstream.logistic_regression import module as logreg
from models.checkpoints import build_from_checkpoint
from pretrain.simclr.module import SimCLRModule
from utils import run_cli



def main(argv=None):
    parser = test_parser("Test a SimCLR encoder on the test split.")
    parser.add_argument("--probe-epochs", type=int, default=logreg.EPOCHS,
                        help="epochs of the linear probe on frozen train features")
    args = parser.parse_args(argv)
    path, ckpt, data = open_checkpoint(args, "simclr")
    model = build_from_checkpoint(SimCLRModule, ckpt, f"--checkpoint {path.name}", size=args.size)
    trainer = test_trainer(args)
    contrastive = {k.split("/")[1]: float(v) for k, v in trainer.test(model, datamodule=data, verbose=False)[0].items()}
    print("test contrastive: " + ", ".join(f"{k} {v:.4f}" for k, v in contrastive.items()))
    features = FeatureDataModule(data, model.encoder.requires_grad_(False))
    probe = logreg.LogisticRegressionModule(model.encoder.feature_dim, data.num_classes, data.multilabel,
                                            data.flag, max_epochs=args.probe_epochs)
    test_trainer(args, max_epochs=args.probe_epochs, limit_val_batches=0).fit(probe, datamodule=features)
    results = run_test(probe, features, args)
    report(results, data.class_names, path, {"stage": "simclr", "dataset": data.flag, "probe": "logistic regression",
                                             "probe_epochs": args.probe_epochs, "contrastive": contrastive})


if __name__ == "__main__":
    run_cli(main)
