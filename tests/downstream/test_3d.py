"""3D volumes (MedMNIST 3D): loading and its errors, the 3D backbones, 2D/3D mismatches as one-line errors, and
a learning test running every stage on generated volumes whose content depends on the label."""
import json

import numpy as np
import pytest
import torch

from common.data.datamodule import MedMNISTDataModule
from common.data.slices import mid_slices
from common.data.synthetic import write_synthetic
from downstream.logistic_regression import test as lr_test, train as lr_train
from downstream.resnet import test as finetune_test, train as finetune_train
from helpers.fakedata import write_textures_3d
from models.backbones import BACKBONES, build_backbone, reads
from models.checkpoints import load_encoder
from models.pixels import RawPixels
from models.resnet3d import ResNet3DEncoder
from models.stages import read_features
from pretrain.base import knn_monitor_metrics
from pretrain.simclr import train as simclr_train
from experiments import label_efficiency
from utils import UserError, models_dir, run_cli

NETWORKS_3D = [(name, stem) for name, entry in BACKBONES.items() if entry.dims == 3 for stem in (entry.stems or (None,))]


@pytest.fixture(scope="module")
def volumes_dir(tmp_path_factory):
    """adrenalmnist3d (grey, binary) at 28 and 64 voxels, organmnist3d (11 classes) at 28, in MedMNIST's format."""
    folder = tmp_path_factory.mktemp("medmnist3d")
    write_synthetic(folder, "adrenalmnist3d", 28, splits=(24, 8, 8))
    write_synthetic(folder, "adrenalmnist3d", 64, splits=(6, 4, 4))
    write_synthetic(folder, "organmnist3d", 28, splits=(22, 11, 11))
    return folder


# ------------------------------------------------------------------ loading
@pytest.mark.parametrize("flag, size, classes", [("adrenalmnist3d", 28, 2), ("adrenalmnist3d", 64, 2),
                                                 ("organmnist3d", 28, 11)])
def test_volumes_load_as_uint8_n_1_d_h_w_with_the_file_s_voxels_and_labels(volumes_dir, flag, size, classes):
    data = MedMNISTDataModule(flag, size, volumes_dir, download=False).load()
    assert (data.dims, data.num_channels, data.num_classes, data.multilabel) == (3, 1, classes, False)
    suffix = "" if size == 28 else f"_{size}"
    with np.load(volumes_dir / f"{flag}{suffix}.npz") as npz:
        for split in ("train", "val", "test"):
            images, labels = data.splits[split]
            assert images.dtype == torch.uint8 and images.shape == (len(npz[f"{split}_images"]), 1, size, size, size)
            assert torch.equal(images[:, 0], torch.from_numpy(npz[f"{split}_images"]))
            assert torch.equal(labels, torch.from_numpy(npz[f"{split}_labels"][:, 0]).long())


def test_bad_3d_files_and_sizes_give_user_errors(tmp_path):
    def write(images):
        arrays = {f"{s}_{k}": images if k == "images" else np.zeros((len(images), 1), np.uint8)
                  for s in ("train", "val", "test") for k in ("images", "labels")}
        np.savez(tmp_path / "adrenalmnist3d.npz", **arrays)

    for images in (np.zeros((2, 28, 28), np.uint8),  # 2D images in a 3D flag's file
                   np.zeros((2, 28, 28, 20), np.uint8),  # not a cube
                   np.zeros((2, 28, 28, 28), np.float32)):  # not uint8
        write(images)
        with pytest.raises(UserError, match="cubic volumes"):
            MedMNISTDataModule("adrenalmnist3d", data_dir=tmp_path, download=False).load()
    with pytest.raises(UserError, match="unsupported size 128 for adrenalmnist3d.*28, 64 voxels"):
        MedMNISTDataModule("adrenalmnist3d", size=128, data_dir=tmp_path, download=False)
    with pytest.raises(UserError, match="did you mean organmnist3d"):
        MedMNISTDataModule("organmnist3", data_dir=tmp_path)


# ------------------------------------------------------------------ backbones
@pytest.mark.parametrize("name, stem", NETWORKS_3D)
@pytest.mark.parametrize("size", [28, 64])
def test_every_3d_backbone_gives_features_of_its_width(name, stem, size):
    torch.manual_seed(0)
    backbone = build_backbone(name, 1, size, stem).eval()
    batch = 2 if size == 28 else 1
    with torch.no_grad():
        features = backbone(torch.randn(batch, 1, size, size, size).contiguous(memory_format=torch.channels_last_3d))
    assert features.shape == (batch, backbone.feature_dim) and torch.isfinite(features).all()
    assert backbone.feature_dim == {"resnet18_3d": 512, "resnet50_3d": 2048, "small_cnn_3d": 256}[name]
    assert reads(backbone, 1, size, dims=3) and not reads(backbone, 1, size, dims=2)
    assert not reads(build_backbone("resnet18", 1, size), 1, size, dims=3)


def test_3d_resnet_keys_are_torchvision_s_video_resnet():
    from torchvision.models.video import r3d_18

    reference = set(r3d_18().state_dict()) - {"fc.weight", "fc.bias"}
    assert set(ResNet3DEncoder("resnet18_3d", 1, "imagenet").state_dict()) == reference
    assert set(ResNet3DEncoder("resnet18_3d", 1, "small").state_dict()) == reference


def test_stems_divide_28_voxels_as_their_2d_twins():
    for stem, side in (("imagenet", 7), ("small", 28)):
        encoder = ResNet3DEncoder("resnet18_3d", 1, stem)
        assert encoder.stem(torch.zeros(1, 1, 28, 28, 28)).shape[-3:] == (side,) * 3


def test_mid_slices_and_raw_voxels():
    x = torch.arange(2 * 4 ** 3).view(2, 1, 4, 4, 4)
    slices = mid_slices(x)
    assert slices.shape == (2, 1, 4, 12)
    assert torch.equal(slices[..., :4], x[:, :, 2]) and torch.equal(slices[..., 4:8], x[:, :, :, 2])
    assert torch.equal(slices[..., 8:], x[:, :, :, :, 2])
    assert RawPixels(1, 4, dims=3)(x.float()).shape == (2, 64) and RawPixels(1, 4, dims=3).feature_dim == 64


# ------------------------------------------------------------------ mismatches
@pytest.mark.parametrize("script, argv, message", [
    (simclr_train, ["--dataset", "adrenalmnist3d", "--aug", "novel"], "--aug novel is a 2D sequence but adrenalmnist3d"),
    (simclr_train, ["--dataset", "breastmnist", "--aug", "volume"], "--aug volume is a 3D sequence but breastmnist"),
    (simclr_train, ["--dataset", "adrenalmnist3d", "--backbone", "resnet18"], "reads 2D images but the data set holds 3D"),
    (simclr_train, ["--dataset", "breastmnist", "--backbone", "small_cnn_3d"], "reads 3D volumes but the data set holds 2D"),
    (finetune_train, ["--dataset", "adrenalmnist3d", "--init", "none", "--backbone", "vit_tiny"], "reads 2D images"),
    (lr_train, ["--dataset", "adrenalmnist3d", "--encoder", "random", "--backbone", "resnet50"], "reads 2D images"),
    (simclr_train, ["--dataset", "adrenalmnist3d", "--size", "224"], "unsupported size 224"),
])
def test_an_option_for_the_other_kind_of_data_is_a_one_line_error(volumes_dir, output_root, capsys, script, argv, message):
    write_synthetic(volumes_dir, "breastmnist", 28, splits=(8, 4, 4))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(script.main, [*argv, "--data-dir", str(volumes_dir), "--epochs", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not output_root.exists()  # nothing written


# ------------------------------------------------------------------ learning, and every stage on volumes
@pytest.fixture(scope="module")
def textures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("textures3d")
    write_textures_3d(folder)
    return folder


def test_simclr_learns_volumes_and_every_stage_runs_on_them(textures, output_root, capsys):
    """Pretraining on volumes whose class is the direction of their stripes makes the kNN classifier on its features
    better than on random-init features of the same network (several seeds); the probe, finetuning, the baseline,
    their test.py and the label-efficiency command then run on the volumes unchanged."""
    data = MedMNISTDataModule("adrenalmnist3d", data_dir=textures).load()
    held_out = {"train": data.splits["train"], "val": data.splits["test"]}  # bank: training volumes, queries: test

    # the method's own settings (--recipe study: on volumes SimCLR's defaults, the last layer), selected by the kNN
    # monitor: what SimCLR learns, not what the volume recipe (tuned on adrenalmnist3d) does with 8 epochs of stripes
    run = simclr_train.main(["--dataset", "adrenalmnist3d", "--data-dir", str(textures), "--backbone", "small_cnn_3d",
                             "--recipe", "study", "--select-by", "knn", "--epochs", "8", "--batch-size", "32",
                             "--name", "simclr-3d"])
    record = json.loads(run.with_suffix(".config.json").read_text())
    options = record["options"]
    assert (options["aug"], options["backbone"], record["selected_by"]) == ("volume", "small_cnn_3d", "val/knn_auroc")

    def knn_auroc(encoder):  # at the features the run was trained and monitored for
        monitored = read_features(encoder, options["features"])
        return knn_monitor_metrics(monitored, held_out, 2, False, torch.device("cpu"))["val/knn_auroc"]

    random_init = []
    for seed in range(3):
        torch.manual_seed(seed)
        random_init.append(knn_auroc(build_backbone("small_cnn_3d", 1, 28)))
    pretrained = knn_auroc(load_encoder(run, "--encoder", 1, 28, dims=3))
    print(f"kNN test AUROC: pretrained {pretrained:.3f}, random init {random_init}")
    assert pretrained >= 0.8 and pretrained >= sum(random_init) / len(random_init) + 0.08, (pretrained, random_init)

    common = ["--dataset", "adrenalmnist3d", "--data-dir", str(textures)]
    lr_train.main([*common, "--encoder", "simclr-3d", "--solver", "lbfgs", "--name", "probe-3d"])
    lr_test.main([*common, "--checkpoint", "probe-3d", "--no-references"])
    probe = json.loads((models_dir("logistic_regression") / "probe-3d.test.json").read_text())
    assert probe["acc"] >= 0.8, probe
    for init, name in (("simclr-3d", "finetune-3d"), ("none", "baseline-3d")):
        network = ["--backbone", "small_cnn_3d"] if init == "none" else []  # the default 3D ResNet-18 is 130 MB a copy
        finetune_train.main([*common, "--init", init, *network, "--epochs", "1", "--batch-size", "32", "--name", name])
        finetune_test.main([*common, "--checkpoint", name])
        result = json.loads((models_dir("resnet") / f"{name}.test.json").read_text())
        assert 0 <= result["acc"] <= 1 and result["init"] == (str(run) if init != "none" else None)
    out = output_root / "le"
    label_efficiency.main([*common, "--encoders", "simclr-3d", "--protocols", "probe", "--labels", "5", "all",
                           "--seeds", "0", "--out", str(out)])
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 4  # header; 2 budgets x (the encoder, random init, raw voxels, best untrained)
    assert any("random-small_cnn_3d" in row for row in rows) and any(",pixels," in row for row in rows)
    assert all(",small_cnn_3d " in row for row in rows if ",best-untrained," in row)  # a 3D network's stages


def test_resize_upsamples_volumes_trilinearly_before_the_3d_network():
    torch.manual_seed(0)
    resized = build_backbone("small_cnn_3d", 1, 28, resize=32).eval()
    plain = build_backbone("small_cnn_3d", 1, 32).eval()
    plain.load_state_dict(resized.state_dict())
    x = torch.rand(2, 1, 28, 28, 28)
    expected = plain(torch.nn.functional.interpolate(x, size=(32, 32, 32), mode="trilinear", align_corners=False))
    torch.testing.assert_close(resized(x), expected)


def test_runs_at_64_voxels_carry_the_size_in_their_names_and_find_their_own_encoder(volumes_dir, output_root):
    common = ["--dataset", "adrenalmnist3d", "--size", "64", "--data-dir", str(volumes_dir)]
    run = simclr_train.main([*common, "--backbone", "small_cnn_3d", "--epochs", "1", "--batch-size", "2"])
    assert run.name == "pretrain-adrenalmnist3d-64.ckpt"
    probe = lr_train.main([*common, "--epochs", "1"])  # the default encoder: the one of its own size
    assert probe.name == "downstream-adrenalmnist3d-64.ckpt"
    assert json.loads(probe.with_suffix(".config.json").read_text())["options"]["encoder"] == str(run)
    record = json.loads(run.with_suffix(".config.json").read_text())
    assert record["peak_rss_mb"] > 0 and record["peak_cuda_allocated_mb"] is None  # the run states its peak memory
