"""Each stage's train.py and test.py end to end on tiny generated data, as a user runs them."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from common.data.datamodule import MedMNISTDataModule
from common.evaluation.features import FeatureDataModule
from conftest import REPO
from helpers.events import image_tags, scalar_tags, scalar_values
from downstream.logistic_regression import probe as lr_probe, test as lr_test, train as lr_train
from common.evaluation.linear_probe import LogisticRegressionModule
from downstream.resnet import test as resnet_test, train as resnet_train
from models.backbones import build_backbone
from pretrain import test as pretrain_test
from pretrain.simclr import train as simclr_train
from utils import UserError, models_dir, resolve_encoder, run_cli


@pytest.fixture(scope="module")
def pretrained(data_dir, tmp_path_factory):
    """A 2-epoch SimCLR run on grey breastmnist, shared by the tests of this module (the small CNN: the stages' plumbing
    is the point here, not the network; ResNets run in tests/models/ and tests/downstream/test_3d.py)."""
    root = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDSIMCLR_OUTPUT_ROOT", str(root))
        simclr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "2",
                           "--batch-size", "16", "--aug", "natural", "--backbone", "small_cnn", "--select-by", "knn"])
    return root


@pytest.fixture
def out(pretrained, monkeypatch):
    monkeypatch.setenv("MEDSIMCLR_OUTPUT_ROOT", str(pretrained))
    return pretrained


def test_pretraining_writes_checkpoint_config_and_tensorboard(out):
    folder = models_dir("simclr")
    assert (folder / "pretrain-breastmnist.ckpt").is_file()
    config = json.loads((folder / "pretrain-breastmnist.config.json").read_text())
    assert config["options"]["aug"] == "natural" and len(config["data_md5"]) == 32
    tags = scalar_tags(folder / "tb_logs" / "pretrain-breastmnist")
    for split in ("train", "val"):
        assert {f"{split}/loss", f"{split}/acc_top1", f"{split}/acc_top5", f"{split}/acc_mean_pos"} <= tags
    assert {"train/lr", "val/knn_acc", "val/knn_auroc"} <= tags
    assert image_tags(folder / "tb_logs" / "pretrain-breastmnist") == {"train/views"}  # the first batch's views
    checkpoints = list((folder / "tb_logs" / "pretrain-breastmnist").rglob("epoch=*-val_knn_auroc=*.ckpt"))
    assert len(checkpoints) == 1 and list(folder.rglob("last.ckpt"))
    assert config["selected_by"] == "val/knn_auroc" and "val/knn_auroc" in config["selected_validation_metrics"]


def test_select_by_contrastive_keeps_the_studys_rule_and_the_monitor_follows_monitor_every(output_root, data_dir):
    run = simclr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "2", "--batch-size",
                             "16", "--backbone", "small_cnn", "--select-by", "contrastive", "--monitor-every", "1"])
    logs = models_dir("simclr") / "tb_logs" / "pretrain-breastmnist"
    assert len(list(logs.rglob("epoch=*-val_acc_top5=*.ckpt"))) == 1 and not list(logs.rglob("*knn*.ckpt"))
    config = json.loads(run.with_suffix(".config.json").read_text())
    assert config["selected_by"] == "val/acc_top5" and "val/knn_auroc" in config["selected_validation_metrics"]
    assert len(scalar_values(logs, "val/knn_auroc")) == 2  # every epoch


def test_select_by_last_keeps_the_last_epoch_while_the_monitor_still_runs(output_root, data_dir):
    from models.checkpoints import read_checkpoint

    run = simclr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "3", "--batch-size",
                             "16", "--backbone", "small_cnn", "--select-by", "last", "--monitor-every", "1",
                             "--name", "keep-last"])
    config = json.loads(run.with_suffix(".config.json").read_text())
    assert config["selected_by"] == "the last epoch" and config["options"]["select_by"] == "last"
    assert read_checkpoint(run)["epoch"] == 2  # the third epoch's (from 0), whatever the monitor said
    assert len(scalar_values(models_dir("simclr") / "tb_logs" / "keep-last", "val/knn_auroc")) == 3


def test_resize_is_recorded_and_every_stage_rebuilds_the_encoder_with_it(output_root, data_dir, capsys):
    run = simclr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "1", "--batch-size",
                             "16", "--backbone", "small_cnn", "--resize", "64"])
    assert torch.load(run, weights_only=True)["hyper_parameters"]["resize"] == 64
    encoder = resolve_encoder("pretrain-breastmnist", "--encoder")
    probe = lr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "1", "--encoder",
                           str(encoder), "--name", "probe-64"])
    lr_test.main(["--checkpoint", str(probe), "--data-dir", str(data_dir), "--no-references"])
    finetune = resnet_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "1",
                                  "--init", str(encoder), "--name", "finetune-64"])
    assert torch.load(finetune, weights_only=True)["hyper_parameters"]["resize"] == 64
    resnet_test.main(["--checkpoint", str(finetune), "--data-dir", str(data_dir)])
    with pytest.raises(SystemExit) as exit_info:  # a pretrained encoder's size is the one it records
        run_cli(resnet_train.main, ["--dataset", "breastmnist", "--data-dir", str(data_dir), "--init", str(encoder),
                                    "--resize", "32"])
    assert exit_info.value.code == 2 and "--init none or imagenet only" in capsys.readouterr().err


def test_existing_checkpoint_is_never_overwritten_without_flag(out, data_dir, capsys):
    final = models_dir("simclr") / "pretrain-breastmnist.ckpt"
    before = final.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(simclr_train.main, ["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and "--overwrite" in err
    assert final.read_bytes() == before


def test_simclr_test_reports_probe_metrics(out, data_dir, capsys):
    pretrain_test.main(["--checkpoint", "pretrain-breastmnist", "--data-dir", str(data_dir), "--probe-epochs", "3"])
    printed = capsys.readouterr().out
    assert "test ACC" in printed and "test AUROC" in printed and "test SimCLR: loss" in printed
    result = json.loads((models_dir("simclr") / "pretrain-breastmnist.test.json").read_text())
    assert 0 <= result["acc"] <= 1 and 0 <= result["auroc"] <= 1 and len(result["per_class_acc"]) == 2


def test_logistic_regression_train_and_test(out, data_dir, capsys):
    lr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "3",
                   "--encoder", "pretrain-breastmnist", "--samples-per-class", "5"])
    head = models_dir("logistic_regression") / "downstream-breastmnist-5-spc.ckpt"
    saved = torch.load(head, weights_only=True)
    assert saved["hyper_parameters"]["encoder"] == str(models_dir("simclr") / "pretrain-breastmnist.ckpt")
    assert set(saved["state_dict"]) == {"head.weight", "head.bias"}  # the encoder is not copied
    lr_test.main(["--checkpoint", "downstream-breastmnist-5-spc", "--data-dir", str(data_dir)])  # knows its encoder
    printed = capsys.readouterr().out
    assert "malignant" in printed and "test AUROC" in printed
    assert json.loads(head.with_name(head.stem + ".test.json").read_text())["encoder"].endswith("pretrain-breastmnist.ckpt")
    tags = scalar_tags(models_dir("logistic_regression") / "tb_logs")
    assert {"train/loss", "val/loss", "val/acc", "val/auroc"} <= tags


def test_probe_test_reports_the_references_trained_once_then_cached(out, data_dir, capsys, monkeypatch):
    lr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "2", "--samples-per-class", "6",
                   "--encoder", "pretrain-breastmnist", "--name", "probe-with-references"])
    lr_test.main(["--checkpoint", "probe-with-references", "--data-dir", str(data_dir)])
    printed = capsys.readouterr().out
    result = json.loads((models_dir("logistic_regression") / "probe-with-references.test.json").read_text())
    assert set(result["references"]) == {"random-small_cnn", "pixels", "best-untrained"}
    for tag, row in result["references"].items():
        assert 0 <= row["auroc"] <= 1 and f"{tag:<32}  {row['acc']:8.4f}" in printed
        reference = torch.load(row["checkpoint"], weights_only=True)["hyper_parameters"]
        assert reference["seed"] == 0 and reference["max_epochs"] == 2  # the head's settings
    chosen = result["references"]["best-untrained"]["chosen"]  # a random-init stage of the backbone (the small CNN)
    assert chosen["network"] == "small_cnn" and 0 <= chosen["val_auroc"] <= 1
    best = torch.load(result["references"]["best-untrained"]["checkpoint"], weights_only=True)["hyper_parameters"]
    assert (best["encoder"], best["features"]) == ("random", chosen["features"])
    assert best["backbone"] == chosen["network"].split("-")[0]
    assert torch.load(result["references"]["random-small_cnn"]["checkpoint"],
                      weights_only=True)["hyper_parameters"]["features"] == "last"  # the random row: its last layer
    assert "pretrain-breastmnist" in printed.split("test AUROC")[-1]  # the encoder's own row, above them
    monkeypatch.setattr(lr_probe, "train_probe", lambda *a: pytest.fail("a reference was trained again"))
    lr_test.main(["--checkpoint", "probe-with-references", "--data-dir", str(data_dir)])  # read from the cache
    again = json.loads((models_dir("logistic_regression") / "probe-with-references.test.json").read_text())
    assert again["references"] == result["references"]


def test_a_replaced_npz_drops_its_cached_references(out, data_dir, tmp_path, capsys):
    import numpy as np
    own = tmp_path / "data"
    own.mkdir()
    (own / "breastmnist.npz").write_bytes((data_dir / "breastmnist.npz").read_bytes())
    lr_train.main(["--dataset", "breastmnist", "--data-dir", str(own), "--epochs", "1", "--samples-per-class", "4",
                   "--encoder", "pretrain-breastmnist", "--name", "probe-replaced-npz"])
    lr_test.main(["--checkpoint", "probe-replaced-npz", "--data-dir", str(own)])
    cache = models_dir("logistic_regression") / "references" / "breastmnist.json"
    before = json.loads(cache.read_text())
    mine = {k: v for k, v in before.items() if v["data_file"] == str((own / "breastmnist.npz").resolve())}
    assert len(mine) == 3 and all(Path(v["checkpoint"]).is_file() for v in mine.values())
    with np.load(own / "breastmnist.npz") as arrays:  # the same flag and path, other images
        replaced = {key: (255 - arrays[key]) if key.endswith("_images") else arrays[key] for key in arrays.files}
    np.savez(own / "breastmnist.npz", **replaced)
    capsys.readouterr()
    lr_test.main(["--checkpoint", "probe-replaced-npz", "--data-dir", str(own)])
    printed = capsys.readouterr().out
    assert "note: dropped 3 cached reference result(s)" in printed and "has changed" in printed
    after = json.loads(cache.read_text())
    assert not set(mine) & set(after)  # the old entries are gone, their checkpoints deleted
    assert not any(Path(v["checkpoint"]).exists() for v in mine.values())
    assert {k: v for k, v in after.items() if k in before} == {k: v for k, v in before.items() if k not in mine}
    assert sum(v["data_file"] == str((own / "breastmnist.npz").resolve()) for v in after.values()) == 3  # recomputed


def test_lbfgs_probe_on_raw_pixels_is_one_epoch_and_tests_with_its_reference(output_root, data_dir, capsys):
    lr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--encoder", "pixels", "--solver", "lbfgs",
                   "--name", "pixels"])
    head = models_dir("logistic_regression") / "pixels.ckpt"
    saved = torch.load(head, weights_only=True)
    assert saved["hyper_parameters"]["solver"] == "lbfgs" and saved["hyper_parameters"]["encoder"] == "pixels"
    assert saved["state_dict"]["head.weight"].shape == (2, 28 * 28) and saved["epoch"] == 0  # one epoch: the fit
    assert "train/l2" in scalar_tags(models_dir("logistic_regression") / "tb_logs" / "pixels")
    lr_test.main(["--checkpoint", "pixels", "--data-dir", str(data_dir)])
    assert json.loads(head.with_name("pixels.test.json").read_text())["encoder"] == "pixels"
    with pytest.raises(SystemExit) as exit_info:  # the pixels have no network to choose
        run_cli(lr_train.main, ["--dataset", "breastmnist", "--data-dir", str(data_dir), "--encoder", "pixels",
                                "--backbone", "small_cnn"])
    assert exit_info.value.code == 2 and "--encoder random or imagenet only" in capsys.readouterr().err


def test_the_pixel_reference_on_large_inputs_is_read_average_pooled_with_a_note(output_root, data_dir, capsys,
                                                                                monkeypatch):
    from models import pixels
    volume = torch.arange(2 * 64 ** 3, dtype=torch.float32).reshape(2, 1, 64, 64, 64)
    reader = pixels.RawPixels(1, 64, dims=3)  # 262,144 voxels: over the cap, read at 32^3
    blocks = volume.reshape(2, 1, 32, 2, 32, 2, 32, 2).mean(dim=(3, 5, 7)).flatten(1)
    assert reader.pool == 2 and reader.feature_dim == 32 ** 3 and torch.allclose(reader(volume), blocks)
    assert pixels.RawPixels(1, 28, dims=3).pool == 1 and pixels.RawPixels(3, 28).pool == 1  # MedMNIST's read whole
    monkeypatch.setattr(pixels, "MAX_FEATURES", 200)  # 28 x 28 = 784 values: pooled 2x to 14 x 14 = 196
    lr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--encoder", "pixels", "--solver", "lbfgs",
                   "--name", "pooled-pixels"])
    assert "the pixel reference reads the raw pixels average-pooled 2x to 14x14 (196 values" in capsys.readouterr().out
    head = models_dir("logistic_regression") / "pooled-pixels.ckpt"
    assert torch.load(head, weights_only=True)["state_dict"]["head.weight"].shape == (2, 196)
    lr_test.main(["--checkpoint", "pooled-pixels", "--data-dir", str(data_dir)])  # rebuilt the same way
    assert json.loads(head.with_name("pooled-pixels.test.json").read_text())["auroc"] > 0


def test_logistic_regression_leaves_encoder_untouched(data_dir):
    encoder = build_backbone().train()  # train mode on purpose: extraction must switch it to eval
    before = copy.deepcopy(encoder.state_dict())
    data = MedMNISTDataModule("bloodmnist", data_dir=data_dir)
    features = FeatureDataModule(data, encoder.requires_grad_(False))
    head = LogisticRegressionModule(encoder.feature_dim, data.num_classes, max_epochs=2)
    pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False).fit(head, features)
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN running stats/counters
    assert any("running_mean" in k for k in before)


def test_finetune_from_pretrained_and_test(out, data_dir, capsys):
    resnet_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "1",
                       "--init", "pretrain-breastmnist", "--samples", "20", "--lr", "0.01"])
    final = models_dir("resnet") / "downstream-breastmnist-20-samples.ckpt"
    saved = torch.load(final, weights_only=True)
    assert saved["hyper_parameters"]["lr"] == 0.01 and saved["optimizer_states"][0]["param_groups"][0]["lr"] == 0.01
    resnet_test.main(["--checkpoint", str(final), "--data-dir", str(data_dir)])
    assert json.loads(final.with_name(final.stem + ".test.json").read_text())["dataset"] == "breastmnist"


def test_baseline_multilabel_and_rgb(out, data_dir, capsys):
    for flag in ("chestmnist", "bloodmnist"):
        resnet_train.main(["--dataset", flag, "--data-dir", str(data_dir), "--epochs", "1", "--init", "none",
                           "--backbone", "small_cnn"])
        final = models_dir("resnet") / f"baseline-{flag}.ckpt"
        assert torch.load(final, weights_only=True)["hyper_parameters"]["init"] is None
        resnet_test.main(["--checkpoint", f"baseline-{flag}", "--dataset", flag, "--data-dir", str(data_dir)])
        result = json.loads(final.with_name(final.stem + ".test.json").read_text())
        assert len(result["per_class_acc"]) == {"chestmnist": 14, "bloodmnist": 8}[flag]
        assert 0 <= result["auroc"] <= 1


def test_commands_run_from_another_directory(out, data_dir, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "downstream/resnet/test.py"), "--checkpoint",
                             "pretrain-breastmnist", "--data-dir", str(data_dir)],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("error: --checkpoint") and "Traceback" not in result.stderr


def test_logistic_regression_makes_one_update_per_minibatch(data_dir):
    data = MedMNISTDataModule("bloodmnist", data_dir=data_dir)  # 64 training images
    features = FeatureDataModule(data, build_backbone().requires_grad_(False))
    head = LogisticRegressionModule(512, data.num_classes, max_epochs=3, batch_size=10)
    before = head.head.weight.detach().clone()
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(head, features)
    assert trainer.global_step == 3 * 7  # ceil(64 / 10) AdamW updates per epoch, counted by Lightning
    assert not torch.equal(before, head.head.weight)
    assert head.lr_schedulers().last_epoch == 3


def test_a_run_name_is_looked_up_in_every_method_and_must_be_unique(output_root):
    for method in ("simclr", "moco"):
        models_dir(method).mkdir(parents=True)
    (models_dir("moco") / "moco-x.ckpt").write_bytes(b"")
    assert resolve_encoder("moco-x", "--encoder") == (models_dir("moco") / "moco-x.ckpt").resolve()
    (models_dir("simclr") / "moco-x.ckpt").write_bytes(b"")
    with pytest.raises(UserError, match="runs of that name in .*moco/models and .*simclr/models"):
        resolve_encoder("moco-x", "--encoder")
    with pytest.raises(UserError, match="no such checkpoint.*pretrain/<method>/models or .*downstream/resnet/models"):
        resolve_encoder("nothing", "--encoder", also=("resnet",))
