"""Heat maps (Grad-CAM, the top-K patch head, attention rollout), explain.py of both downstream stages, and
torchvision's ImageNet weights as a starting point."""
import json
import os

import matplotlib.image as mpimg
import pytest
import torch
import torchvision
from torch import nn

from common.explain.heatmaps import attention_rollout, grad_cam, heatmaps
from downstream.logistic_regression import explain as lr_explain, probe as lr_probe, test as lr_test, train as lr_train
from downstream.resnet import explain as finetune_explain, test as finetune_test, train as finetune_train
from helpers.events import image_tags
from models.backbones import build_backbone
from models.imagenet import imagenet_weights
from models.topk_pool import TopKPatchPool
from pretrain.simclr import train as simclr_train
from experiments import label_efficiency
from utils import models_dir, run_cli


class SquareFinder(nn.Module):
    """A tiny network whose answer is decided by one region: box filters, ReLU, then the global maximum (which
    sits on the image's bright square) into the logits."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(1, 3, 5, padding=2, bias=False), nn.ReLU())
        with torch.no_grad():
            self.block[0].weight.copy_(torch.stack([torch.full((1, 5, 5), 1 / 25.0 * (k + 1)) for k in range(3)]))
        self.head = nn.Linear(3, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0, 0.5, 0.2], [-1.0, -0.5, -0.2]]))

    def forward(self, x):
        return self.head(self.block(x).amax(dim=(2, 3)))


def test_grad_cam_finds_the_region_that_decides_and_follows_its_definition():
    torch.manual_seed(0)
    model = SquareFinder()
    x = torch.rand(6, 1, 28, 28) * 0.3
    corners = [(2, 3), (15, 18), (20, 4), (5, 20), (11, 11), (19, 19)]
    for image, (row, col) in zip(x, corners):
        image[0, row:row + 6, col:col + 6] = 1.0
    target = torch.zeros(6, dtype=torch.long)
    maps = grad_cam(model, [model.block], x, target)
    assert maps.shape == (6, 28, 28) and maps.min() >= 0 and maps.max() <= 1
    for heat, (row, col) in zip(maps, corners):
        peak = divmod(int(heat.argmax()), 28)
        assert row - 2 <= peak[0] < row + 8 and col - 2 <= peak[1] < col + 8, (peak, row, col)
    # the definition, written out: alpha_k = mean of d y_c / d A_k, map = ReLU(sum_k alpha_k A_k), scaled to [0, 1]
    activation = model.block(x).detach().requires_grad_(True)
    logits = model.head(activation.amax(dim=(2, 3)))
    (gradient,) = torch.autograd.grad(logits[:, 0].sum(), activation)
    expected = torch.relu((gradient.mean(dim=(2, 3), keepdim=True) * activation).sum(1)).detach()
    low = expected.flatten(1).min(1).values[:, None, None]
    high = expected.flatten(1).max(1).values[:, None, None]
    torch.testing.assert_close(maps, (expected - low) / (high - low))


def test_top_k_head_takes_the_k_best_scored_tokens_and_passes_gradient_to_its_scores():
    torch.manual_seed(0)
    pool = TopKPatchPool(dim=6, k=3)
    tokens = torch.randn(2, 10, 6)
    scores = pool.scores(tokens)
    best = scores.topk(3, dim=1).indices
    weights = scores.gather(1, best).softmax(dim=1)
    expected = (weights[..., None] * tokens.gather(1, best[..., None].expand(-1, -1, 6))).sum(1)
    torch.testing.assert_close(pool(tokens), expected)
    pool(tokens).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pool.score.parameters())
    others = torch.ones(10, dtype=torch.bool)
    others[best[0]] = False
    moved = tokens.clone()
    moved[0, others] = moved[0, others] * 0.9  # the unselected tokens play no part (if still unselected)
    if set(pool.scores(moved)[0].topk(3).indices.tolist()) == set(best[0].tolist()):
        torch.testing.assert_close(pool(moved)[0], pool(tokens)[0])
    with pytest.raises(ValueError, match="between 1 and 49"):
        build_backbone("vit_tiny", 1, 28, patch_topk=50)
    with pytest.raises(ValueError, match="no patch tokens"):
        build_backbone("resnet18", 1, 28, patch_topk=4)


def test_vit_heat_maps_patch_scores_and_attention_rollout():
    torch.manual_seed(0)
    x = torch.randn(3, 1, 28, 28)
    vit = build_backbone("vit_tiny", 1, 28).eval()
    rollout = attention_rollout(vit, x)
    assert rollout.shape == (3, 7, 7) and torch.all(rollout >= 0)
    topk = build_backbone("vit_tiny", 1, 28, patch_topk=8).eval()
    scores = topk.patch_scores(x)
    torch.testing.assert_close(scores.flatten(1).sum(1), torch.ones(3))  # a softmax over the 49 patches
    head = nn.Linear(topk.feature_dim, 2)
    maps = heatmaps(nn.Sequential(topk, head), topk, x, torch.zeros(3, dtype=torch.long))
    assert maps.shape == (3, 28, 28) and float(maps.max()) == pytest.approx(1.0)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def place_imagenet_weights(home):
    """A file at torchvision's cache path with torchvision's resnet18 key layout (random values, made here)."""
    weights = imagenet_weights("resnet18")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, folder / os.path.basename(weights.url))
    return state


def test_init_imagenet_loads_torchvisions_weights_from_the_cache(torch_home, output_root, data_dir):
    state = place_imagenet_weights(torch_home)
    common = ["--dataset", "breastmnist", "--data-dir", str(data_dir)]
    final = finetune_train.main([*common, "--init", "imagenet", "--epochs", "1", "--batch-size", "16"])
    assert final.name == "imagenet-breastmnist.ckpt"
    assert json.loads(final.with_suffix(".config.json").read_text())["options"]["init"] == "imagenet"
    probe = lr_train.main([*common, "--encoder", "imagenet", "--epochs", "2", "--name", "probe-imagenet"])
    from common.data.datamodule import MedMNISTDataModule

    data = MedMNISTDataModule("breastmnist", 28, data_dir).load()
    encoder, path = lr_probe.frozen_encoder("imagenet", data)
    assert path == "imagenet" and encoder.in_channels == 1
    torch.testing.assert_close(encoder.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))  # grey: summed
    torch.testing.assert_close(encoder.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    lr_test.main(["--checkpoint", str(probe), "--data-dir", str(data_dir)])
    assert json.loads(probe.with_name("probe-imagenet.test.json").read_text())["encoder"] == "imagenet"
    out = output_root / "le"
    label_efficiency.main([*common, "--encoders", "imagenet", "--protocols", "probe", "finetune", "--labels", "all",
                           "--seeds", "0", "--references", "--finetune-epochs", "1", "--out", str(out)])
    rows = (out / "results.csv").read_text().splitlines()[1:]
    assert sorted(row.split(",")[:2] for row in rows) == [["finetune", "imagenet-resnet18-imagenet"],
                                                          ["probe", "imagenet-resnet18-imagenet"]]


def test_init_imagenet_without_the_file_is_a_one_line_error(torch_home, output_root, data_dir, monkeypatch, capsys):
    def offline(url, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(finetune_train.main, ["--dataset", "breastmnist", "--data-dir", str(data_dir), "--init", "imagenet"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "resnet18-f37072fd.pth" in err and str(torch_home / "hub" / "checkpoints") in err and "download" in err
    assert not output_root.exists()
    with pytest.raises(SystemExit):
        run_cli(finetune_train.main, ["--dataset", "breastmnist", "--data-dir", str(data_dir), "--init", "imagenet",
                                      "--backbone", "small_cnn"])
    assert "no ImageNet weights for small_cnn" in capsys.readouterr().err


def test_explain_draws_a_grid_for_finetuning_and_the_probe_and_finetuning_logs_it(output_root, data_dir, capsys):
    common = ["--dataset", "bloodmnist", "--data-dir", str(data_dir)]
    final = finetune_train.main([*common, "--init", "none", "--backbone", "small_cnn", "--epochs", "1",
                                 "--batch-size", "16", "--name", "cnn"])
    assert "val/heatmaps" in image_tags(models_dir("resnet") / "tb_logs" / "cnn")
    assert final.with_name("cnn.explain-val.png").is_file()
    png = finetune_explain.main(["--checkpoint", "cnn", "--data-dir", str(data_dir), "--n", "6"])
    assert png == final.with_name("cnn.explain-test.png")
    picture = mpimg.imread(png)
    assert picture.shape[0] > 300 and picture.shape[1] > 400 and picture[..., :3].std() > 0.05
    probe = lr_train.main([*common, "--encoder", "random", "--backbone", "resnet18", "--epochs", "2", "--name", "rp"])
    out = probe.parent / "grid.png"
    assert lr_explain.main(["--checkpoint", "rp", "--data-dir", str(data_dir), "--split", "val", "--out", str(out)]) == out
    assert out.is_file() and "wrote" in capsys.readouterr().out


def test_vit_with_the_top_k_head_pretrains_probes_finetunes_and_explains(output_root, data_dir):
    common = ["--dataset", "breastmnist", "--data-dir", str(data_dir)]
    run = simclr_train.main([*common, "--backbone", "vit_tiny", "--patch-topk", "8", "--epochs", "1",
                             "--batch-size", "16", "--name", "vit-top8"])
    hparams = torch.load(run, map_location="cpu", weights_only=False)["hyper_parameters"]
    assert hparams["patch_topk"] == 8
    probe = lr_train.main([*common, "--encoder", "vit-top8", "--epochs", "2", "--name", "vit-probe"])
    final = finetune_train.main([*common, "--init", "vit-top8", "--epochs", "1", "--batch-size", "16",
                                 "--name", "vit-ft"])
    state = torch.load(final, map_location="cpu", weights_only=False)["state_dict"]
    assert any(key.startswith("encoder.topk.score") for key in state)  # finetuning keeps the head
    finetune_test.main(["--checkpoint", "vit-ft", "--data-dir", str(data_dir)])
    assert finetune_explain.main(["--checkpoint", "vit-ft", "--data-dir", str(data_dir), "--n", "4"]).is_file()
    assert lr_explain.main(["--checkpoint", str(probe), "--data-dir", str(data_dir), "--n", "4"]).is_file()


def test_patch_topk_needs_a_vit_and_a_k_within_its_tokens(output_root, data_dir, capsys):
    common = ["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "1"]
    for extra, message in ((["--patch-topk", "4"], "use a ViT"), (["--backbone", "vit_tiny", "--patch-topk", "60"],
                                                                   "between 1 and 49")):
        with pytest.raises(SystemExit):
            run_cli(simclr_train.main, [*common, *extra])
        assert message in capsys.readouterr().err
    assert not output_root.exists()


def test_grad_cam_reads_a_block_with_room_for_a_map_at_28_px():
    """A ResNet-18 with the ImageNet stem brings 28 px images to 1 x 1 at layer4, where Grad-CAM would be one
    number: the map comes from the deepest block that is at least 7 x 7 (layer1 here), and varies over the image."""
    torch.manual_seed(0)
    encoder = build_backbone("resnet18", 1, 28).eval()
    model = nn.Sequential(encoder, nn.Linear(encoder.feature_dim, 2))
    maps = heatmaps(model, encoder, torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 0, 1]))
    assert torch.isfinite(maps).all() and maps.shape == (4, 28, 28)
    assert all(float(m.max()) == pytest.approx(1.0) and float(m.std()) > 0.05 for m in maps if m.max() > 0)


def test_a_grid_can_be_drawn_from_a_sample_of_a_large_split(tmp_path, data_dir):
    """Finetuning draws its TensorBoard grid from at most 1,024 validation images; `limit` samples them."""
    from common.explain import gallery as explain
    from common.data.datamodule import MedMNISTDataModule

    data = MedMNISTDataModule("bloodmnist", 28, data_dir).load()
    encoder = build_backbone("small_cnn", 3, 28)
    model = nn.Sequential(encoder, nn.Linear(encoder.feature_dim, data.num_classes))
    png = explain.explain(model, encoder, data, "val", 4, 0, tmp_path / "grid.png", "sampled", limit=10)
    assert png.is_file() and mpimg.imread(png).shape[0] > 200
    with pytest.raises(explain.UserError, match="2D images only"):
        explain.explain(model, encoder, MedMNISTDataModule("adrenalmnist3d", 28, data_dir), "val", 4, 0,
                        tmp_path / "x.png", "volumes")
