"""Look at an encoder's features: PCA and t-SNE scatter plots coloured by class, and a silhouette score.

Works on a pretrained encoder of any method or on a finetuned/baseline classifier (its encoder, without
the head). Writes `<checkpoint stem>.pca.png`, `.tsne.png` and `.features.json` next to the checkpoint
(or in --out-dir).

    python pretrain/feature_analysis.py --checkpoint pretrain-bloodmnist
    python pretrain/feature_analysis.py --checkpoint downstream/resnet/models/downstream-bloodmnist.ckpt
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from sklearn.metrics import silhouette_score  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from common.cli.options import DataOptions, from_namespace  # noqa: E402
from common.cli.parsers import POSITIVE, POSITIVE_INT, data_parser  # noqa: E402
from common.data.datamodule import SPLITS  # noqa: E402
from common.evaluation.features import extract_features, feature_device  # noqa: E402
from common.evaluation.open_checkpoint import open_checkpoint  # noqa: E402
from models.checkpoints import PRETRAINED, checkpoint_kind, encoder_from  # noqa: E402
from utils import UserError, atomic_path, atomic_write_text, pretrain_stages  # noqa: E402

MAX_SAMPLES = 2000
PERPLEXITY = 30.0  # sklearn's default
MIN_SAMPLES = 3  # PCA to 2D and t-SNE need at least this many points
KINDS = (PRETRAINED, "resnet")  # the checkpoints whose encoder it analyses
NONE_LABEL = "none"  # multi-label images without any positive label
SILHOUETTE_METRIC = "euclidean"
FIGURE_INCHES = (8.0, 6.0)
DPI = 100
POINT_SIZE = 8
LEGEND_SIZE = 7
FEW_CLASSES, MANY_CLASSES = "tab10", "tab20"  # colour maps for <= 10 and <= 20 classes
NONE_COLOUR = "lightgrey"
# t-SNE's OpenMP threads contend with torch's own OpenMP pool (a second libgomp): on a small or busy machine
# one thread was 2-40x faster than two (2000 points: 20 s vs 42-57 s on 2 cores), so it runs on one
TSNE_THREADS = 1


def build_parser():
    parser = data_parser("PCA and t-SNE plots and the silhouette score of an encoder's features.")
    parser.set_defaults(dataset=None, size=None)
    parser.add_argument("--checkpoint", required=True,
                        help="pretrained encoder (any method) or finetuned/baseline classifier: a path, or a run "
                             "name from pretrain/<method>/models or downstream/resnet/models")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--max-samples", type=POSITIVE_INT, default=MAX_SAMPLES,
                        help="analyse at most N random images of the split")
    parser.add_argument("--perplexity", type=POSITIVE, default=PERPLEXITY,
                        help="t-SNE perplexity (lowered to the number of samples - 1 if needed)")
    parser.add_argument("--out-dir", default=None, help="folder for the plots and JSON (default: the checkpoint's)")
    return parser


@dataclass(frozen=True, kw_only=True)
class FeatureAnalysisOptions(DataOptions):
    """build_parser's options, typed."""
    checkpoint: str
    split: str
    max_samples: int
    perplexity: float
    out_dir: str | None


def parse_args(argv=None) -> FeatureAnalysisOptions:
    return from_namespace(FeatureAnalysisOptions, build_parser().parse_args(argv))


def open_encoder(args: FeatureAnalysisOptions):
    """(path, kind, encoder, data, options) for --checkpoint; --dataset defaults to the one it records (`options`:
    `args` with the data resolved)."""
    path, ckpt, data, args = open_checkpoint(args, args.checkpoint, pretrain_stages() + ["resnet"], KINDS)
    encoder = encoder_from(ckpt, path, "--checkpoint", data.num_channels, data.size, data.dims)
    return path, checkpoint_kind(ckpt), encoder, data, args


def sample_split(images: torch.Tensor, labels: torch.Tensor, max_samples: int, seed: int):
    """All images of a split, or `max_samples` of them chosen with a seeded generator (kept in order)."""
    if len(images) <= max_samples:
        return images, labels
    keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:max_samples].sort().values
    return images[keep], labels[keep]


def plot_labels(labels: torch.Tensor, class_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """(one class index per image, names of those indices). Multi-label: the first positive label,
    or an extra class 'none' for images with no positive label."""
    if labels.ndim == 1:
        return labels.numpy().astype(int), list(class_names)
    positive = labels > 0
    first = torch.where(positive.any(1), positive.int().argmax(1), len(class_names))
    return first.numpy().astype(int), list(class_names) + [NONE_LABEL]


def tsne_perplexity(requested: float, n_samples: int) -> float:
    """t-SNE needs perplexity < number of samples: lower it (and say so) when it is not."""
    if requested < n_samples:
        return requested
    used = float(n_samples - 1)
    print(f"perplexity {requested:g} is not below the {n_samples} samples: using {used:g}")
    return used


def embed(features: np.ndarray, perplexity: float, seed: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """2D PCA and t-SNE of (N, D) features, and the variance ratio the two PCA components explain."""
    pca = PCA(n_components=2, random_state=seed).fit(features)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    with threadpool_limits(limits=TSNE_THREADS):
        tsne_points = tsne.fit_transform(features)
    return pca.transform(features), tsne_points, pca.explained_variance_ratio_.tolist()


def silhouette(features: np.ndarray, classes: np.ndarray) -> float | None:
    """sklearn's silhouette score of the features grouped by class; None when undefined
    (it needs between 2 and N - 1 distinct classes)."""
    n_classes = len(np.unique(classes))
    if not 2 <= n_classes <= len(classes) - 1:
        return None
    return float(silhouette_score(features, classes, metric=SILHOUETTE_METRIC))


def class_colours(names: list[str]) -> list:
    cmap = plt.get_cmap(FEW_CLASSES if len(names) <= 10 else MANY_CLASSES)
    return [NONE_COLOUR if name == NONE_LABEL else cmap(i % cmap.N) for i, name in enumerate(names)]


def scatter_plot(points: np.ndarray, classes: np.ndarray, names: list[str], title: str, axes: tuple[str, str],
                 out: Path) -> None:
    """One scatter plot, one colour and legend entry per class present, written atomically as PNG."""
    fig, ax = plt.subplots(figsize=FIGURE_INCHES, dpi=DPI)
    try:
        for index, (name, colour) in enumerate(zip(names, class_colours(names))):
            mask = classes == index
            if mask.any():
                ax.scatter(points[mask, 0], points[mask, 1], s=POINT_SIZE, color=colour,
                           label=f"{name} ({int(mask.sum())})")
        ax.set(title=title, xlabel=axes[0], ylabel=axes[1])
        ax.legend(fontsize=LEGEND_SIZE, markerscale=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")  # tmp name: no .png suffix
    finally:
        plt.close(fig)


def write_plots(pca_points, tsne_points, classes, names, record: dict, out_dir: Path, stem: str) -> dict:
    """Both scatter plots; returns their paths by method."""
    where = f"{record['dataset']} {record['split']}, {record['samples']} images"
    pc_axes = tuple(f"PC {i + 1} ({v:.0%} of the variance)" for i, v in enumerate(record["pca_explained_variance"]))
    paths = {"pca": out_dir / f"{stem}.pca.png", "tsne": out_dir / f"{stem}.tsne.png"}
    scatter_plot(pca_points, classes, names, f"PCA of {stem} features ({where})", pc_axes, paths["pca"])
    tsne_title = f"t-SNE of {stem} features ({where}; perplexity {record['perplexity']:g})"
    scatter_plot(tsne_points, classes, names, tsne_title, ("t-SNE 1", "t-SNE 2"), paths["tsne"])
    return paths


def analyse(features: np.ndarray, classes: np.ndarray, names: list[str],
            args: FeatureAnalysisOptions) -> tuple[dict, np.ndarray, np.ndarray]:
    """The JSON record (silhouette, counts, settings) and the 2D PCA and t-SNE points."""
    if len(features) < MIN_SAMPLES:
        raise UserError(f"the {args.split} split has only {len(features)} images", f"need {MIN_SAMPLES} or more")
    if not np.isfinite(features).all():
        raise UserError("the encoder gives non-finite features", "the checkpoint's weights are broken (NaN or inf)")
    perplexity = tsne_perplexity(args.perplexity, len(features))
    pca_points, tsne_points, variance = embed(features, perplexity, args.seed)
    counts = {name: int((classes == i).sum()) for i, name in enumerate(names)}
    record = {"dataset": args.dataset, "split": args.split, "samples": len(features), "feature_dim": features.shape[1],
              "classes_present": sum(1 for n in counts.values() if n), "class_counts": counts,
              "silhouette": silhouette(features, classes), "silhouette_metric": SILHOUETTE_METRIC,
              "perplexity": perplexity, "perplexity_requested": args.perplexity,
              "pca_explained_variance": variance, "seed": args.seed}
    return record, pca_points, tsne_points


def main(argv=None):
    args = parse_args(argv)
    path, kind, encoder, data, args = open_encoder(args)
    images, labels = sample_split(*data.splits[args.split], args.max_samples, args.seed)
    features = extract_features(encoder, images, feature_device(args.accelerator)).cpu().double().numpy()
    classes, names = plot_labels(labels, data.class_names)
    record, pca_points, tsne_points = analyse(features, classes, names, args)
    record.update(checkpoint=str(path), kind=kind, split_size=len(data.splits[args.split][0]))
    out_dir = Path(args.out_dir).expanduser() if args.out_dir else path.parent
    paths = write_plots(pca_points, tsne_points, classes, names, record, out_dir, path.stem)
    record.update({f"{method}_png": str(p) for method, p in paths.items()})
    json_path = out_dir / f"{path.stem}.features.json"
    atomic_write_text(json_path, json.dumps(record, indent=2) + "\n")
    print_summary(record, [*paths.values(), json_path])
    return record


def print_summary(record: dict, written: list[Path]) -> None:
    samples, classes, score = record["samples"], record["classes_present"], record["silhouette"]
    print(f"{samples} {record['split']} images of {record['dataset']}, {record['feature_dim']} features, "
          f"{classes} classes")
    print(f"silhouette score: {score:.4f}" if score is not None
          else f"silhouette score: undefined ({classes} classes among {samples} images; "
               "it needs at least 2 and fewer classes than images)")
    for path in written:
        print(f"wrote {path}")
