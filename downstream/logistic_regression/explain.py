"""Heat maps of a logistic-regression head on its frozen encoder: a PNG grid of images with where it looked.

    python downstream/logistic_regression/explain.py --checkpoint downstream-breastmnist
"""
from __future__ import annotations

from common.cli.options import from_namespace
from common.explain import gallery as explain
from common.evaluation.linear_probe import LogisticRegressionModule
from common.evaluation.open_checkpoint import check_classes, open_checkpoint
from downstream.logistic_regression.probe import IMAGENET, RANDOM, frozen_encoder
from models.feature_choice import LAST
from models.stages import read_features
from models.checkpoints import build_from_checkpoint
from utils import UserError, run_cli


def build_parser():
    return explain.explain_parser("Heat maps of a logistic-regression head on its frozen encoder.")


def main(argv=None):
    options = from_namespace(explain.ExplainOptions, build_parser().parse_args(argv))
    path, ckpt, data, options = open_checkpoint(options, options.checkpoint, ["logistic_regression"],
                                                ("logistic_regression",))
    head = build_from_checkpoint(LogisticRegressionModule, ckpt, f"--checkpoint {path.name}",
                                 multilabel=data.multilabel, dataset=data.flag)
    check_classes(head, data, path)
    reference = head.hparams.encoder
    if reference is None:
        raise UserError(f"{path.name} does not record its encoder", "it is one of the study's heads: no heat maps")
    network = ((head.hparams.backbone, head.hparams.stem, head.hparams.get("resize"), head.hparams.get("patch_topk"))
               if reference in (RANDOM, IMAGENET) else (None,) * 4)
    encoder, encoder_path = frozen_encoder(reference, data, head.hparams.seed, *network)
    title = f"{path.stem}: logistic regression on {getattr(encoder_path, 'stem', encoder_path)} (frozen)"
    reader = read_features(encoder, head.hparams.get("features") or LAST)  # what the head was trained on
    return explain.run(options, explain.Classifier(reader, head), encoder, data, path, title)


if __name__ == "__main__":
    run_cli(main)
