"""Preview an augmentation: a PNG grid with one row per image, the original then its random views.

Every pretraining method uses the same augmentation; `--checkpoint` shows the views a run was trained on.
Volumes (3D data sets) are shown as their three mid-slices side by side.

    python pretrain/preview.py --dataset bloodmnist --aug novel
    python pretrain/preview.py --dataset breastmnist --aug greyscale --n-views 6 --out views.png
    python pretrain/preview.py --checkpoint moco-breastmnist        # its dataset, size and augmentation
    python pretrain/preview.py --dataset adrenalmnist3d --aug volume
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from common.augment.images import ALL_AUGMENTATIONS, Augmentation, build_augmentation  # noqa: E402
from common.cli.parsers import DEFAULT_DATASET, DEFAULT_SIZE, POSITIVE_INT, data_parser  # noqa: E402
from common.data.datamodule import SPLITS, MedMNISTDataModule  # noqa: E402
from common.data.normalize import to_unit  # noqa: E402
from common.data.slices import mid_slices  # noqa: E402
from models.checkpoints import PRETRAINED, expect_kind, read_checkpoint  # noqa: E402
from pretrain.cli import checked_augmentation  # noqa: E402
from utils import PRETRAIN_FOLDER, UserError, atomic_path, output_root, resolve_encoder, run_cli  # noqa: E402

N_IMAGES = 8
N_VIEWS = 4
CELL_INCHES = 1.2  # width and height of one image in the grid
TITLE_INCHES = 0.8  # extra height above the grid for the two-line title and the column titles
TITLE_GAP_INCHES = 0.05  # space above the title
MIN_WIDTH_INCHES = 6.0  # room for the title when there are few views
DPI = 100
LABEL_CHARS = 18  # class names are cut to this length beside each row
TITLE_SIZE = 10
LABEL_SIZE = 7


PREVIEWS = PRETRAIN_FOLDER / "previews"  # under the output root, beside the methods' folders


def build_parser():
    parser = data_parser("Preview an augmentation sequence on a few images of a MedMNIST dataset.")
    parser.set_defaults(dataset=None, size=None)
    parser.add_argument("--aug", default=None, choices=ALL_AUGMENTATIONS, help="augmentation sequence")
    parser.add_argument("--checkpoint", default=None,
                        help="a pretraining run (any method; path or run name): its dataset, size and --aug "
                             "are the defaults")
    parser.add_argument("--n-images", type=POSITIVE_INT, default=N_IMAGES, help="rows: images shown")
    parser.add_argument("--n-views", type=POSITIVE_INT, default=N_VIEWS, help="augmented views per image")
    parser.add_argument("--split", default="train", choices=SPLITS, help="split the images are drawn from")
    parser.add_argument("--out", default=None,
                        help="PNG to write (default pretrain/previews/preview-<dataset>-<aug>.png)")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    recorded = run_options(args.checkpoint) if args.checkpoint else {}
    for option, default in (("dataset", DEFAULT_DATASET), ("size", DEFAULT_SIZE), ("aug", None)):
        setattr(args, option, getattr(args, option) or recorded.get(option) or default)
    if args.aug is None:
        raise UserError("no augmentation to preview", "pass --aug, or --checkpoint of a pretraining run")
    return args


def run_options(reference: str) -> dict:
    """The hyper-parameters a pretraining checkpoint of any method records."""
    path = resolve_encoder(reference, "--checkpoint")
    ckpt = read_checkpoint(path)
    expect_kind(ckpt, path, (PRETRAINED,), "--checkpoint")
    return dict(ckpt.get("hyper_parameters") or {})


def pick_images(images: torch.Tensor, labels: torch.Tensor, n: int, seed: int):
    """`n` random images (all of them if fewer) and their labels, in a seeded order."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[order], labels[order]


def make_views(images: torch.Tensor, augmentation: Augmentation, n_views: int, seed: int) -> list[torch.Tensor]:
    """uint8 (N, C, H, W) -> [originals, view 1, ..., view n] as floats in [0, 1]; volumes (N, C, D, H, W) -> their
    three mid-slices (N, C, H, 3 W)."""
    generator = torch.Generator().manual_seed(seed)
    originals = to_unit(images)
    views = [originals] + [augmentation(originals.clone(), generator) for _ in range(n_views)]
    return [mid_slices(x) for x in views]


def label_text(label: torch.Tensor, class_names: list[str]) -> str:
    """A class name (single-label) or the positive class names joined by '+' (multi-label)."""
    if label.ndim == 0:
        return class_names[int(label)][:LABEL_CHARS]
    positives = [class_names[i] for i in label.nonzero().flatten().tolist()]
    return ("+".join(positives) or "none")[:LABEL_CHARS]


def figure_size(rows: int, cols: int, aspect: float = 1.0) -> tuple[float, float]:
    """(width, height) in inches of a grid of rows x cols images (width / height `aspect`) with a title above."""
    return max(cols * CELL_INCHES * aspect, MIN_WIDTH_INCHES), rows * CELL_INCHES + TITLE_INCHES


def draw(ax, image: torch.Tensor) -> None:
    """One float (C, H, W) image: grey images in grey, RGB as is."""
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(image.permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def plot_grid(columns: list[torch.Tensor], row_labels: list[str], title: str):
    """A figure with one row per image and one column per entry of `columns` (originals first)."""
    rows, cols = len(row_labels), len(columns)
    width, height = figure_size(rows, cols, columns[0].shape[-1] / columns[0].shape[-2])
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), dpi=DPI, squeeze=False)
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.01, top=1 - TITLE_INCHES / height,
                        wspace=0.05, hspace=0.05)
    for col, batch in enumerate(columns):
        for row in range(rows):
            draw(axes[row, col], batch[row])
        axes[0, col].set_title("original" if col == 0 else f"view {col}", fontsize=LABEL_SIZE)
    for row, text in enumerate(row_labels):
        axes[row, 0].set_ylabel(text, fontsize=LABEL_SIZE)
    fig.suptitle(title, fontsize=TITLE_SIZE, y=1 - TITLE_GAP_INCHES / height, va="top")
    return fig


def write_png(fig, out: Path) -> None:
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)  # the temporary name does not end in .png
    finally:
        plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    data = MedMNISTDataModule(args.dataset, args.size, args.data_dir, seed=args.seed, storage=args.data_storage).load()
    images, labels = pick_images(*data.splits[args.split], args.n_images, args.seed)
    augmentation = build_augmentation(checked_augmentation(args.aug, data.flag), args.size)
    columns = make_views(images, augmentation, args.n_views, args.seed)
    what = f"{args.size} voxels, mid-slices across D, H, W" if data.dims == 3 else f"{args.size} px"
    title = f"{data.flag} ({args.split}, {what}): augmentation '{args.aug}'\n{' > '.join(augmentation.steps)}"
    fig = plot_grid(columns, [label_text(label, data.class_names) for label in labels], title)
    out = Path(args.out).expanduser() if args.out else output_root() / PREVIEWS / f"preview-{data.flag}-{args.aug}.png"
    write_png(fig, out)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    run_cli(main)
