"""Heat-map grids of a classifier's decisions: what every stage's explain.py draws, and finetuning logs.

A grid shows `n` images of a split, each with its heat map (common.explain.heatmaps) over it, its true and predicted
label and the predicted probability, in green when right and red when wrong: half of them (when there are that
many) wrong, the rest right, drawn at random with --seed from each group.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from common.cli.options import DataOptions  # noqa: E402
from common.cli.parsers import POSITIVE_INT  # noqa: E402
from common.data.datamodule import MedMNISTDataModule, eval_batch  # noqa: E402
from common.evaluation.features import feature_device  # noqa: E402
from common.explain.heatmaps import heatmaps, method_name  # noqa: E402
from common.data.normalize import normalize, to_unit  # noqa: E402
from common.evaluation.open_checkpoint import test_parser  # noqa: E402
from utils import UserError, atomic_path  # noqa: E402

N_IMAGES = 16  # ours: a 4 x 4 grid
OVERLAY_ALPHA = 0.45  # the heat map's opacity over the image


def explain_parser(description: str):
    """The options of every explain.py: the checkpoint, the split, how many images, where the PNG goes."""
    parser = test_parser(description)  # test.py's: --checkpoint, data options defaulting to the recorded ones
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--n", type=POSITIVE_INT, default=N_IMAGES, help="images in the grid")
    parser.add_argument("--out", type=Path, default=None,
                        help="the PNG (default: <checkpoint>.explain-<split>.png beside the checkpoint)")
    return parser


@dataclass(frozen=True, kw_only=True)
class ExplainOptions(DataOptions):
    """explain_parser's options, typed."""
    checkpoint: str
    split: str
    n: int
    out: Path | None


class Classifier(nn.Module):
    """An encoder and a head on its features: normalised images -> logits (a probe's frozen encoder and head)."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def predict(model: nn.Module, images: torch.Tensor, multilabel: bool, device: torch.device) -> torch.Tensor:
    """Class probabilities (N, K) of uint8 images: softmax, or per-label sigmoid for multi-label data."""
    out = []
    with torch.no_grad():
        step = eval_batch(images, 256)
        for start in range(0, len(images), step):
            logits = model(normalize(to_unit(images[start:start + step].to(device))))
            out.append((logits.sigmoid() if multilabel else logits.softmax(dim=1)).cpu())
    return torch.cat(out)


def pick(correct: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of n images: up to half of them wrongly predicted, the rest right, each group drawn at random."""
    generator = torch.Generator().manual_seed(seed)
    wrong, right = [torch.nonzero(correct == value)[:, 0] for value in (False, True)]
    wrong, right = (group[torch.randperm(len(group), generator=generator)] for group in (wrong, right))
    n = min(n, len(correct))
    take_wrong = min(len(wrong), max(n // 2, n - len(right)))
    return torch.cat([wrong[:take_wrong], right[:n - take_wrong]])


def render(images: torch.Tensor, maps: torch.Tensor, captions: list[tuple[str, bool]], title: str, path: Path) -> Path:
    """A PNG grid: each uint8 image (C, H, W) with its map (H, W) in [0, 1] over it, its caption green (right) or
    red (wrong) below."""
    n = len(images)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, heat, (caption, right) in zip(axes.flat, images, maps, captions):
        picture = image.permute(1, 2, 0).numpy()
        ax.imshow(picture[..., 0] if picture.shape[2] == 1 else picture, cmap="gray", vmin=0, vmax=255)
        ax.imshow(heat.numpy(), cmap="jet", alpha=OVERLAY_ALPHA, vmin=0, vmax=1)
        ax.set_title(caption, fontsize=8, color="tab:green" if right else "tab:red")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def caption(names: list[str], true, predicted: int, probability: float, multilabel: bool) -> tuple[str, bool]:
    short = [name.split(",")[0][:18] for name in names]
    if multilabel:
        right = bool(true[predicted] == 1)
        truth = "+".join(short[i] for i in torch.nonzero(true)[:, 0].tolist()) or "none"
    else:
        right, truth = int(true) == predicted, short[int(true)]
    return f"true {truth}\npred {short[predicted]} ({probability:.2f})", right


def explain(model: nn.Module, encoder: nn.Module, data: MedMNISTDataModule, split: str, n: int, seed: int,
            path: Path, title: str, device: torch.device | None = None, limit: int | None = None) -> Path:
    """Predict the split (or, with `limit`, that many of its images drawn with `seed`), pick n images (a mix of
    right and wrong), draw their heat maps into the PNG `path`."""
    if data.dims != 2:
        raise UserError("heat maps are drawn for 2D images only", "choose a 2D data set")
    try:
        method = method_name(encoder)
    except ValueError as err:
        raise UserError(str(err), "explain a ResNet, small CNN or ViT classifier") from None
    device = device or torch.device("cpu")
    model = model.to(device).eval()
    images, labels = data.splits[split]
    sampled = limit is not None and len(images) > limit
    if sampled:
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
        images, labels = images[keep.to(images.device)], labels[keep.to(labels.device)]
    probabilities = predict(model, images, data.multilabel, device)
    predicted = probabilities.argmax(dim=1)
    labels = labels.cpu()
    correct = labels.gather(1, predicted[:, None])[:, 0] == 1 if data.multilabel else labels == predicted
    chosen = pick(correct, n, seed)
    x = normalize(to_unit(images[chosen].to(device)))
    maps = heatmaps(model, encoder, x, predicted[chosen].to(device)).cpu()
    captions = [caption(data.class_names, labels[i], int(predicted[i]), float(probabilities[i, predicted[i]]),
                        data.multilabel) for i in chosen.tolist()]
    accuracy = float(correct.float().mean())
    of = f" of {len(correct)} drawn at random" if sampled else ""
    heading = f"{title}\n{data.flag} {split}: {method}; {int(correct.sum())}/{len(correct)} right{of} ({accuracy:.1%})"
    return render(images[chosen].cpu(), maps, captions, heading, path)


def default_png(checkpoint: Path, split: str) -> Path:
    return checkpoint.with_name(f"{checkpoint.stem}.explain-{split}.png")


def run(options: ExplainOptions, model: nn.Module, encoder: nn.Module, data: MedMNISTDataModule, checkpoint: Path,
        title: str) -> Path:
    """explain.py's common part: the grid of --split into --out (or beside the checkpoint), printed."""
    path = explain(model, encoder, data, options.split, options.n, options.seed,
                   options.out or default_png(checkpoint, options.split), title, feature_device(options.accelerator))
    print(f"wrote {path}")
    return path


def grid_image(path: Path) -> np.ndarray:
    """The PNG as (3, H, W) floats in [0, 1], for TensorBoard's add_image."""
    return np.ascontiguousarray(plt.imread(path)[..., :3].transpose(2, 0, 1))
