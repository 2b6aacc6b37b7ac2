"""Heat maps of a finetuned or baseline classifier: a PNG grid of images with where the network looked.

    python downstream/resnet/explain.py --checkpoint downstream-breastmnist            # test split, 16 images
    python downstream/resnet/explain.py --checkpoint baseline-breastmnist --split val --n 8
"""
from __future__ import annotations

from pathlib import Path

from common.cli.options import from_namespace
from common.explain import gallery as explain
from common.data.datamodule import MedMNISTDataModule
from common.evaluation.open_checkpoint import open_checkpoint
from downstream.resnet.module import FinetuneClassifier, finetuned
from models.checkpoints import read_checkpoint
from utils import run_cli

TENSORBOARD_SPLIT = "val"  # the grid logged at the end of a finetuning run: the test split stays for test.py
TENSORBOARD_LIMIT = 1024  # images of it predicted to choose the grid from: seconds, not minutes, on a CPU at 224 px


def title(model: FinetuneClassifier, path: Path) -> str:
    init = model.hparams.init
    start = "from scratch (baseline)" if init is None else f"from {Path(init).stem}"
    return f"{path.stem}: {model.hparams.backbone} finetuned {start}"


def log_heatmaps(final: Path, data: MedMNISTDataModule, tensorboard_dir: str | None) -> Path | None:
    """The grid of the finished run on the validation split, beside its checkpoint and in its TensorBoard run
    (image `val/heatmaps`); nothing for volumes or networks without heat maps."""
    model = finetuned(final, read_checkpoint(final), data)
    try:
        png = explain.explain(model, model.encoder, data, TENSORBOARD_SPLIT, explain.N_IMAGES, 0,
                              explain.default_png(final, TENSORBOARD_SPLIT), title(model, final),
                              limit=TENSORBOARD_LIMIT)
    except explain.UserError:
        return None
    if tensorboard_dir:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(tensorboard_dir) as writer:
            writer.add_image(f"{TENSORBOARD_SPLIT}/heatmaps", explain.grid_image(png), global_step=0)
    return png


def build_parser():
    return explain.explain_parser("Heat maps of a finetuned or baseline classifier.")


def main(argv=None):
    options = from_namespace(explain.ExplainOptions, build_parser().parse_args(argv))
    path, ckpt, data, options = open_checkpoint(options, options.checkpoint, ["resnet"], ("resnet",))
    model = finetuned(path, ckpt, data)
    return explain.run(options, model, model.encoder, data, path, title(model, path))


if __name__ == "__main__":
    run_cli(main)
