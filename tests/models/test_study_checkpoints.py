"""The study's published checkpoints (Lightning 1.9 format) work in every stage, and loading is safe."""
import json
import os
import pickle

import pytest
import torch

from helpers import study_format
from downstream.logistic_regression import test as lr_test, train as lr_train
from common.evaluation.linear_probe import LogisticRegressionModule
from downstream.resnet import test as resnet_test, train as resnet_train
from downstream.resnet.module import FinetuneClassifier
from models.checkpoints import build_from_checkpoint, checkpoint_kind, load_encoder, read_checkpoint
from pretrain.simclr import train as simclr_train
from pretrain.simclr.module import SimCLR
from utils import UserError, models_dir, run_cli


@pytest.fixture
def study(tmp_path):
    """The study's three kinds of checkpoint, named as on Zenodo, and the torchvision nets they hold."""
    folder = tmp_path / "study"
    folder.mkdir()
    nets = {
        "simclr": study_format.simclr_checkpoint(folder / "pretrain-breastmnist.ckpt"),
        "logistic_regression": study_format.logistic_regression_checkpoint(folder / "downstream-breastmnist.ckpt", 2),
        "resnet": study_format.resnet_checkpoint(folder / "baseline-breastmnist.ckpt", 2),
    }
    return folder, nets


def test_format_is_the_study_s(study):
    folder, _ = study
    raw = torch.load(folder / "pretrain-breastmnist.ckpt", weights_only=False)
    assert type(raw["hyper_parameters"]).__module__ == "pytorch_lightning.utilities.parsing"
    assert raw["pytorch-lightning_version"] == "1.9.0"
    assert raw["state_dict"]["convnet.fc.0.weight"].shape == (512, 512)
    assert raw["state_dict"]["convnet.fc.2.weight"].shape == (128, 512)


def test_each_kind_is_recognised(study):
    folder, _ = study
    kinds = {p.name: checkpoint_kind(read_checkpoint(p)) for p in folder.iterdir()}
    assert kinds == {"pretrain-breastmnist.ckpt": "simclr", "downstream-breastmnist.ckpt": "logistic_regression",
                     "baseline-breastmnist.ckpt": "resnet"}


def test_simclr_gives_torchvision_features_and_projections(study):
    folder, nets = study
    x = torch.rand(4, 3, 28, 28)
    encoder = load_encoder(folder / "pretrain-breastmnist.ckpt", "--encoder", channels=3, size=28)
    reference = study_format.study_simclr_net()
    reference.load_state_dict(nets["simclr"].state_dict())
    reference.eval()
    projection_head, reference.fc = reference.fc, torch.nn.Identity()
    with torch.no_grad():
        assert torch.allclose(encoder.eval()(x), reference(x), atol=1e-5)
        module = build_from_checkpoint(SimCLR, read_checkpoint(folder / "pretrain-breastmnist.ckpt"), "study").eval()
        assert torch.allclose(module(x), projection_head(reference(x)), atol=1e-5)
    assert module.hparams.temperature == 0.07


def test_finetuned_resnet_gives_torchvision_logits(study):
    folder, nets = study
    ckpt = read_checkpoint(folder / "baseline-breastmnist.ckpt")
    model = build_from_checkpoint(FinetuneClassifier, ckpt, "study", num_classes=2).eval()
    x = torch.rand(4, 3, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x), nets["resnet"](x), atol=1e-5)


def test_logistic_regression_head_gives_the_same_logits(study):
    folder, nets = study
    head = build_from_checkpoint(LogisticRegressionModule, read_checkpoint(folder / "downstream-breastmnist.ckpt"), "s")
    features = torch.randn(5, 512)
    assert torch.allclose(head(features), nets["logistic_regression"](features))


def test_study_checkpoints_work_in_every_command(study, data_dir, output_root, capsys):
    folder, _ = study
    encoder = str(folder / "pretrain-breastmnist.ckpt")
    data = ["--data-dir", str(data_dir)]
    resnet_test.main(["--checkpoint", str(folder / "baseline-breastmnist.ckpt"), *data])  # dataset from the name
    lr_test.main(["--checkpoint", str(folder / "downstream-breastmnist.ckpt"), "--encoder", encoder, *data])
    printed = capsys.readouterr().out
    assert printed.count("test AUROC") == 2
    lr_train.main(["--dataset", "breastmnist", "--encoder", encoder, "--epochs", "1", *data])
    resnet_train.main(["--dataset", "breastmnist", "--init", encoder, "--epochs", "1", *data])
    simclr_train.main(["--dataset", "breastmnist", "--init", encoder, "--epochs", "1", "--batch-size", "16", *data])
    assert (models_dir("logistic_regression") / "downstream-breastmnist.ckpt").is_file()
    assert (models_dir("resnet") / "downstream-breastmnist.ckpt").is_file()
    saved = json.loads((models_dir("simclr") / "pretrain-breastmnist.config.json").read_text())
    assert saved["options"]["init"] == encoder


def test_study_head_without_encoder_asks_for_one(study, data_dir, output_root, capsys):
    folder, _ = study
    with pytest.raises(SystemExit):
        run_cli(lr_test.main, ["--checkpoint", str(folder / "downstream-breastmnist.ckpt"), "--data-dir", str(data_dir)])
    assert "does not record its encoder (pass --encoder" in capsys.readouterr().err


def test_unexpected_or_missing_keys_fail_loudly(study, tmp_path):
    folder, _ = study
    ckpt = torch.load(folder / "baseline-breastmnist.ckpt", weights_only=False)
    ckpt["state_dict"]["backbone.extra.weight"] = torch.zeros(1)
    study_format.save(ckpt, tmp_path / "extra.ckpt")
    with pytest.raises(UserError, match="unexpected weights encoder.extra.weight"):
        build_from_checkpoint(FinetuneClassifier, read_checkpoint(tmp_path / "extra.ckpt"), "extra", num_classes=2)
    del ckpt["state_dict"]["backbone.extra.weight"], ckpt["state_dict"]["backbone.layer4.1.bn2.weight"]
    study_format.save(ckpt, tmp_path / "missing.ckpt")
    with pytest.raises(UserError, match="missing weights encoder.layer4.1.bn2.weight"):
        build_from_checkpoint(FinetuneClassifier, read_checkpoint(tmp_path / "missing.ckpt"), "missing", num_classes=2)


class WritesAFile:
    """A pickle payload: unpickling it calls open(marker, 'w'), i.e. runs code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, data_dir, output_root, capsys):
    marker = tmp_path / "pwned"
    ckpt = {"state_dict": {"convnet.conv1.weight": torch.zeros(1)}, "hyper_parameters": WritesAFile(str(marker))}
    path = tmp_path / "pretrain-evil.ckpt"
    with open(path, "wb") as handle:
        pickle.dump(ckpt, handle)  # what torch.save would write for this object, in the legacy format
    torch.save(ckpt, tmp_path / "evil-zip.ckpt")
    for bad in (path, tmp_path / "evil-zip.ckpt"):
        with pytest.raises(UserError, match="refusing to load"):
            read_checkpoint(bad)
        with pytest.raises(SystemExit) as exit_info:
            run_cli(lr_train.main, ["--dataset", "breastmnist", "--data-dir", str(data_dir), "--encoder", str(bad)])
        assert exit_info.value.code == 2 and "refusing to load" in capsys.readouterr().err
    assert not marker.exists()
    assert not os.path.exists(models_dir("logistic_regression"))


def test_our_checkpoints_from_before_methods_were_plug_ins_still_load(tmp_path, data_dir, output_root, capsys):
    """Before the method and backbone registries, our SimCLR runs recorded stage 'simclr', `arch` and the
    projection size as `hidden_dim`; finetuned runs `arch`. Both keep working everywhere."""
    model = SimCLR(in_channels=3)
    legacy = {"state_dict": model.state_dict(), "hyper_parameters": {
        "arch": "resnet18", "in_channels": 3, "dataset": "breastmnist", "size": 28, "aug": "novel", "hidden_dim": 128,
        "lr": 5e-4, "weight_decay": 1e-4, "temperature": 0.07, "max_epochs": 5, "seed": 0, "init": None,
        "channels_last": True, "stage": "simclr"}}
    torch.save(legacy, tmp_path / "pretrain-breastmnist.ckpt")
    ckpt = read_checkpoint(tmp_path / "pretrain-breastmnist.ckpt")
    assert checkpoint_kind(ckpt) == "simclr"
    encoder = load_encoder(tmp_path / "pretrain-breastmnist.ckpt", "--encoder", channels=1, size=28)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(encoder.eval()(x), model.encoder.eval()(x), atol=1e-6)
    assert build_from_checkpoint(SimCLR, ckpt, "legacy").hparams.backbone == "resnet18"
    lr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--encoder",
                   str(tmp_path / "pretrain-breastmnist.ckpt"), "--epochs", "1"])
    finetuned = FinetuneClassifier(num_classes=2)
    torch.save({"state_dict": finetuned.state_dict(), "hyper_parameters": {
        "arch": "resnet18", "in_channels": 3, "num_classes": 2, "multilabel": False, "dataset": "breastmnist",
        "lr": 1e-3, "max_epochs": 1, "init": None, "channels_last": True, "stage": "resnet"}},
               tmp_path / "baseline-breastmnist.ckpt")
    resnet_test.main(["--checkpoint", str(tmp_path / "baseline-breastmnist.ckpt"), "--data-dir", str(data_dir)])
    assert "test AUROC" in capsys.readouterr().out
