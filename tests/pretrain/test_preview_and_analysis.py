"""pretrain/preview.py and pretrain/feature_analysis.py, run end to end in-process on tiny data."""
import json
import re

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

import utils
from downstream.resnet import train as resnet_train
from experiments import feature_analysis
from pretrain import preview
from pretrain.simclr import train as simclr_train

SILHOUETTE = re.compile(r"silhouette score: (-?\d+\.\d+)")


def run_error(main, argv, capsys) -> str:
    """Run a command expecting a one-line error and exit code 2; return its stderr."""
    with pytest.raises(SystemExit) as exit_info:
        utils.run_cli(main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1, err
    return err


# ----------------------------------------------------------------------------------- preview


@pytest.mark.parametrize("flag, aug, grey", [("breastmnist", "greyscale", True), ("bloodmnist", "natural", False)])
def test_preview_writes_a_grid_of_images_and_views(data_dir, output_root, capsys, flag, aug, grey):
    n_images, n_views = 3, 2
    out = preview.main(["--dataset", flag, "--aug", aug, "--data-dir", str(data_dir),
                        "--n-images", str(n_images), "--n-views", str(n_views)])
    assert out == output_root / "pretrain/previews" / f"preview-{flag}-{aug}.png"
    assert out.is_relative_to(output_root) and out.is_file()
    assert str(out) in capsys.readouterr().out
    pixels = mpimg.imread(out)
    width, height = preview.figure_size(rows=n_images, cols=1 + n_views)
    assert pixels.shape[:2] == (round(height * preview.DPI), round(width * preview.DPI))
    rgb = pixels[..., :3]
    is_grey = np.allclose(rgb[..., 0], rgb[..., 1]) and np.allclose(rgb[..., 1], rgb[..., 2])
    assert is_grey == grey  # grey datasets drawn in grey, RGB ones in colour


def test_preview_rows_follow_n_images_and_out_is_honoured(data_dir, output_root, tmp_path):
    out = tmp_path / "grids" / "chest.png"
    preview.main(["--dataset", "chestmnist", "--aug", "simple", "--data-dir", str(data_dir),
                  "--n-images", "5", "--n-views", "1", "--split", "val", "--out", str(out)])
    width, height = preview.figure_size(rows=5, cols=2)
    assert mpimg.imread(out).shape[:2] == (round(height * preview.DPI), round(width * preview.DPI))
    assert [p.name for p in out.parent.iterdir()] == ["chest.png"]  # no temporary file left


def test_preview_refuses_unknown_augmentation(data_dir, output_root, capsys):
    err = run_error(preview.main, ["--dataset", "breastmnist", "--aug", "fancy", "--data-dir", str(data_dir)], capsys)
    assert "--aug" in err
    assert not output_root.exists()


# -------------------------------------------------------------------------------- feature analysis


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, data_dir):
    """A 1-epoch SimCLR checkpoint (one batch of 16 images: --samples keeps it quick) and a 1-epoch finetuned
    ResNet, both of breastmnist, in a temporary root."""
    root = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(utils.OUTPUT_ROOT_VARIABLE, str(root))
        simclr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "1",
                           "--batch-size", "16", "--samples", "16"])
        resnet_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "1"])
        yield {"simclr": utils.models_dir("simclr") / "pretrain-breastmnist.ckpt",
               "resnet": utils.models_dir("resnet") / "downstream-breastmnist.ckpt"}


def printed_silhouette(out: str) -> float:
    match = SILHOUETTE.search(out)
    assert match, out
    return float(match.group(1))


def test_analysis_of_a_simclr_run_name(checkpoints, data_dir, capsys):
    path = checkpoints["simclr"]
    record = feature_analysis.main(["--checkpoint", "pretrain-breastmnist", "--data-dir", str(data_dir)])
    out = capsys.readouterr().out
    score = printed_silhouette(out)
    assert -1.0 <= score <= 1.0
    assert "using 15" in out  # perplexity 30 clamped below the 16 test images
    for suffix in (".pca.png", ".tsne.png", ".features.json"):
        written = path.with_name(path.stem + suffix)
        assert written.is_file() and str(written) in out
    saved = json.loads(path.with_name(path.stem + ".features.json").read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved["silhouette"] == pytest.approx(score, abs=1e-4)
    assert saved["dataset"] == "breastmnist" and saved["split"] == "test" and saved["samples"] == 16
    assert sum(saved["class_counts"].values()) == 16 and saved["feature_dim"] > 0
    assert mpimg.imread(path.with_name(path.stem + ".tsne.png")).ndim == 3


def test_analysis_of_a_finetuned_checkpoint_by_path(checkpoints, data_dir, tmp_path, capsys):
    out_dir = tmp_path / "analysis"
    record = feature_analysis.main(["--checkpoint", str(checkpoints["resnet"]), "--data-dir", str(data_dir),
                                    "--split", "train", "--max-samples", "20", "--perplexity", "5",
                                    "--out-dir", str(out_dir)])
    assert -1.0 <= printed_silhouette(capsys.readouterr().out) <= 1.0
    assert record["kind"] == "resnet" and record["samples"] == 20 and record["perplexity"] == 5
    stem = checkpoints["resnet"].stem
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        f"{stem}{suffix}" for suffix in (".features.json", ".pca.png", ".tsne.png"))


def test_analysis_colours_multilabel_images_by_first_label(checkpoints, data_dir, tmp_path, capsys):
    record = feature_analysis.main(["--checkpoint", str(checkpoints["simclr"]), "--dataset", "chestmnist",
                                    "--data-dir", str(data_dir), "--split", "val", "--out-dir", str(tmp_path)])
    assert "none" in record["class_counts"] and sum(record["class_counts"].values()) == 16


def test_analysis_refuses_other_files(checkpoints, data_dir, tmp_path, capsys):
    head = tmp_path / "downstream-breastmnist.ckpt"  # a logistic-regression head, as its train.py saves it
    torch.save({"state_dict": {"head.weight": torch.zeros(2, 512), "head.bias": torch.zeros(2)},
                "hyper_parameters": {"stage": "logistic_regression", "dataset": "breastmnist"}}, head)
    assert "logistic-regression" in run_error(feature_analysis.main, ["--checkpoint", str(head)], capsys)
    nonsense = tmp_path / "nonsense.ckpt"
    nonsense.write_text("not a checkpoint")
    run_error(feature_analysis.main, ["--checkpoint", str(nonsense), "--data-dir", str(data_dir)], capsys)
    assert "no such checkpoint" in run_error(feature_analysis.main, ["--checkpoint", "no-such-run"], capsys)


# --------------------------------------------------------------------------------------- helpers


def test_multilabel_images_without_labels_are_none():
    labels = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    classes, names = feature_analysis.plot_labels(labels, ["a", "b", "c"])
    assert classes.tolist() == [1, 3, 0] and names == ["a", "b", "c", "none"]


def test_silhouette_is_undefined_for_one_class_and_perplexity_is_clamped(capsys):
    features = np.random.default_rng(0).normal(size=(6, 3))
    assert feature_analysis.silhouette(features, np.zeros(6, dtype=int)) is None
    assert -1.0 <= feature_analysis.silhouette(features, np.arange(6) % 2) <= 1.0
    assert feature_analysis.tsne_perplexity(30.0, 6) == 5.0 and "using 5" in capsys.readouterr().out
    assert feature_analysis.tsne_perplexity(4.0, 6) == 4.0


def test_undefined_silhouette_is_said_so(capsys):
    record = {"samples": 5, "split": "test", "dataset": "breastmnist", "feature_dim": 7, "classes_present": 1,
              "silhouette": None}
    feature_analysis.print_summary(record, [])
    assert "silhouette score: undefined (1 classes among 5 images" in capsys.readouterr().out
