"""--features: every backbone's stages (shapes, pooling), the spec's spelling and errors, a probe on stage features
rebuilt by test.py, the kNN monitor and the recorded default, and the strongest untrained reference chosen on val."""
import json

import pytest
import torch

from common.data.datamodule import MedMNISTDataModule
from downstream.logistic_regression import strongest, test as lr_test, train as lr_train
from models import feature_choice
from models.backbones import BACKBONES, build_backbone
from models.stages import all_stages, read_features, split_candidates
from pretrain.simclr import train as simclr_train
from experiments import label_efficiency
from utils import UserError, models_dir, run_cli

NETWORKS = [("small_cnn", None, 28), ("resnet18", "imagenet", 28), ("resnet18", "small", 28), ("vit_tiny", None, 28),
            ("small_cnn_3d", None, 16), ("resnet18_3d", "imagenet", 16)]


@pytest.mark.parametrize("backbone, stem, size", NETWORKS)
def test_every_stage_is_its_output_globally_average_pooled(backbone, stem, size):
    torch.manual_seed(0)
    encoder = build_backbone(backbone, 1, size, stem).eval()
    dims = BACKBONES[backbone].dims
    x = torch.randn(3, 1, *(size,) * dims)
    outputs = encoder.stage_outputs(x)
    assert len(outputs) == BACKBONES[backbone].stages == len(encoder.stage_widths)
    with torch.no_grad():
        for k, output in enumerate(outputs, 1):
            reader = read_features(encoder, f"stage:{k}")
            assert reader.feature_dim == encoder.stage_widths[k - 1] == output.shape[1]
            assert torch.allclose(reader(x), output.flatten(2).mean(dim=2), atol=1e-6)
        every = read_features(encoder, "stages")(x)
        assert every.shape == (3, sum(encoder.stage_widths))
        assert torch.allclose(every[:, -encoder.stage_widths[-1]:], outputs[-1].flatten(2).mean(dim=2), atol=1e-6)
        assert read_features(encoder, "last") is encoder
        reader = all_stages(encoder)
        parts = split_candidates(reader(x), reader)
        assert list(parts) == feature_choice.candidates(len(outputs))
        assert torch.allclose(parts["last"], encoder(x), atol=1e-5)
        if not backbone.startswith("vit"):  # a CNN's last layer is its last stage pooled; a ViT's is its class token
            assert torch.allclose(parts[f"stage:{len(outputs)}"], encoder(x), atol=1e-5)


def test_the_first_block_of_the_small_cnn_has_32_features_at_full_resolution():
    encoder = build_backbone("small_cnn", 1, 28)
    assert encoder.stage_outputs(torch.zeros(2, 1, 28, 28), upto=1)[0].shape == (2, 32, 28, 28)
    resized = build_backbone("resnet18", 1, 28, resize=64)  # --resize applies before the stages too
    assert resized.stage_outputs(torch.zeros(1, 1, 64, 64))[0].shape[-1] == 16
    with torch.no_grad():
        assert read_features(resized, "stage:1")(torch.zeros(1, 1, 28, 28)).shape == (1, 64)


def test_feature_specs_have_one_spelling_and_one_line_errors():
    assert feature_choice.canonical("stages:1,2,3") == "stages:1-3"
    assert feature_choice.canonical("stage:02") == "stage:2"
    assert feature_choice.canonical("stages:3,1") == "stages:1,3"
    assert feature_choice.resolve("stages", 4) == (1, 2, 3, 4) and feature_choice.resolve("last", 4) is None
    for bad in ("stage:0", "stage:", "layer2", "stages:3-1", "stages:1,1"):
        with pytest.raises(ValueError, match="unknown features"):
            feature_choice.parse(bad)
    with pytest.raises(UserError, match="has 4 stages"):
        read_features(build_backbone("small_cnn", 1, 28), "stage:5")


def test_a_probe_on_stage_features_records_them_and_test_reads_the_same(output_root, data_dir, capsys):
    common = ["--dataset", "breastmnist", "--data-dir", str(data_dir), "--solver", "lbfgs"]
    final = lr_train.main([*common, "--encoder", "random", "--backbone", "small_cnn", "--features", "stages:1,2",
                           "--name", "stage-probe"])
    saved = torch.load(final, weights_only=True)
    assert saved["hyper_parameters"]["features"] == "stages:1-2"
    assert saved["state_dict"]["head.weight"].shape == (2, 32 + 64)
    config = json.loads(final.with_suffix(".config.json").read_text())
    assert config["options"]["features"] == "stages:1-2"
    lr_test.main(["--checkpoint", "stage-probe", "--data-dir", str(data_dir)])  # a 96-feature head reads 96 again
    assert 0 <= json.loads(final.with_name("stage-probe.test.json").read_text())["auroc"] <= 1
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lr_train.main, [*common, "--encoder", "pixels", "--features", "stage:1", "--name", "bad"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "pixels has no stages" in err and err.count("\n") == 1
    assert not (models_dir("logistic_regression") / "bad.ckpt").exists()


def test_pretraining_features_feed_the_monitor_and_are_the_probe_default(output_root, data_dir):
    final = simclr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "1",
                               "--batch-size", "16", "--backbone", "small_cnn", "--features", "stage:2",
                               "--monitor-every", "1", "--name", "staged"])
    saved = torch.load(final, weights_only=True)
    assert saved["hyper_parameters"]["features"] == "stage:2"
    assert not any(key.startswith("monitored") for key in saved["state_dict"])  # no second copy of the encoder
    assert "val/knn_auroc" in saved["validation_metrics"]
    head = lr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--encoder", "staged",
                          "--solver", "lbfgs", "--name", "staged-probe"])
    assert torch.load(head, weights_only=True)["state_dict"]["head.weight"].shape == (2, 64)  # its recipe's stage 2
    head = lr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--encoder", "staged",
                          "--solver", "lbfgs", "--features", "last", "--name", "staged-last"])
    assert torch.load(head, weights_only=True)["state_dict"]["head.weight"].shape == (2, 256)


def separable(n: int, informative: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class features (n, 4): the labels shown by the first column when `informative`, else noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = torch.randn(n, 4, generator=generator)
    if informative:
        x[:, 0] += 3 * labels
    return x, labels


def test_the_strongest_untrained_reference_is_chosen_on_val_not_test():
    # candidate "a": informative on train and val (its test noise); "b": noise on train and val (informative test)
    def splits(val_informative: bool, test_informative: bool):
        return {"train": separable(40, True, 0), "val": separable(40, val_informative, 1),
                "test": separable(40, test_informative, 2)}

    encoded = {"net": {"a": splits(True, False), "b": splits(False, True)}}
    choice = strongest.choose(encoded, {"net": {"backbone": "small_cnn"}}, 2, False)
    assert choice.features == "a" and choice.val_auroc > 0.9
    assert [t[1] for t in choice.tried] == ["a", "b"]
    encoded = {"net": {"a": splits(False, True), "b": splits(True, False)}}  # the other way round
    assert strongest.choose(encoded, {"net": {"backbone": "small_cnn"}}, 2, False).features == "b"


class NoTest(dict):
    """A data set's splits that fail the test when the test split is read."""

    def __getitem__(self, split):
        if split == "test":
            pytest.fail("the strongest untrained reference's choice read the test split")
        return super().__getitem__(split)


def test_the_label_efficiency_choice_reads_only_train_and_val(data_dir, output_root):
    args = label_efficiency.parse_args(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--labels", "5",
                                        "--seeds", "0", "--protocols", "probe", "--references", "best-untrained"])
    data = MedMNISTDataModule("breastmnist", 28, data_dir).load()
    networks = {"small_cnn": strongest.untrained_networks({"backbone": "pixels"}, data)[0]}
    cell = label_efficiency.Cell("probe", label_efficiency.Encoder("best-untrained", None, {"candidates": networks}),
                                 label_efficiency.Budget(per_class=5), 0, "s")
    runner = label_efficiency.Runner(args, data)
    data.splits = NoTest(data.splits)
    values, chosen = runner.strongest(cell)
    assert (values["encoder"], values["backbone"]) == ("random", "small_cnn") and values["features"]
    assert chosen.startswith("small_cnn ") and "val AUROC" in chosen


def test_features_best_is_the_candidate_best_on_val_of_the_encoders_own():
    def splits(val_informative: bool, test_informative: bool):
        return {"train": separable(40, True, 0), "val": separable(40, val_informative, 1),
                "test": separable(40, test_informative, 2)}

    encoded = {"last": splits(False, True), "stage:1": splits(True, False)}
    choice = strongest.best_features(encoded, 2, False)
    assert choice.features == "stage:1" and [t[1] for t in choice.tried] == ["last", "stage:1"]
    assert strongest.tried_text(choice).startswith("stage:1 ")
    assert feature_choice.candidates(0) == ["last"]  # the raw pixels: their output only
    assert feature_choice.feature_choice_option("best") == "best"
    assert feature_choice.feature_choice_option("stages:1,2") == "stages:1-2"


def test_a_probe_with_features_best_records_its_choice_and_test_reads_it(output_root, data_dir, capsys):
    final = lr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--solver", "lbfgs",
                           "--encoder", "random", "--backbone", "small_cnn", "--features", "best",
                           "--name", "best-probe"])
    out = capsys.readouterr().out
    saved = torch.load(final, weights_only=True)
    chosen = saved["hyper_parameters"]["features"]
    widths = {"last": 256, "stage:1": 32, "stage:2": 64, "stage:3": 128, "stage:4": 256, "stages": 480}
    assert chosen in feature_choice.candidates(4) == list(widths)
    line = next(line for line in out.splitlines() if line.startswith("--features best: "))
    assert line.startswith(f"--features best: {chosen} (val AUROC of each: {chosen} ")  # the best first
    assert sorted(part.split()[0] for part in line.split(": ", 2)[2].rstrip(")").split(", ")) == sorted(widths)
    assert saved["state_dict"]["head.weight"].shape == (2, widths[chosen])
    assert json.loads(final.with_suffix(".config.json").read_text())["options"]["features"] == chosen
    lr_test.main(["--checkpoint", "best-probe", "--data-dir", str(data_dir)])  # rebuilt at the chosen features
    assert 0 <= json.loads(final.with_name("best-probe.test.json").read_text())["auroc"] <= 1


def test_the_label_efficiency_best_features_read_only_train_and_val(data_dir, output_root):
    simclr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "16",
                       "--backbone", "small_cnn", "--name", "enc"])
    args = label_efficiency.parse_args(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--labels", "5",
                                        "--seeds", "0", "--protocols", "probe", "--encoders", "enc"])
    assert args.features == "best"  # the command's default
    data = MedMNISTDataModule("breastmnist", 28, data_dir).load()
    cell = label_efficiency.Cell("probe", label_efficiency.Encoder("enc", str(models_dir("simclr") / "enc.ckpt"), {}),
                                 label_efficiency.Budget(per_class=5), 0, "s")
    runner = label_efficiency.Runner(args, data)
    test_split = data.splits["test"]
    data.splits = NoTest(data.splits)
    assert runner.best(cell) in feature_choice.candidates(4)
    data.splits = {**data.splits, "test": test_split}
