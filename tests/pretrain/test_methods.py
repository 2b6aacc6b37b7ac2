"""Every pretraining method: its pieces against their definitions, a learning test, resume, and the stages
downstream taking its encoder. Methods come from the registry: a new one is tested here without a new line."""
import importlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pretrain
from conftest import REPO
from helpers.events import scalar_tags, scalar_values
from downstream.logistic_regression import test as lr_test, train as lr_train
from downstream.resnet import test as finetune_test, train as finetune_train
from helpers.fakedata import write_stripes
from pretrain.byol import train as byol_train
from pretrain.byol.loss import byol_loss
from pretrain.byol.module import target_momentum
from pretrain.moco.batchnorm import SplitBatchNorm2d, split_count, use_split_batch_norm
from pretrain.moco.key_queue import KeyQueue
from pretrain.moco.module import MoCo
from pretrain.momentum import ema_update, momentum_copy
from utils import models_dir

METHODS = list(pretrain.METHODS)
BACKBONE = ["--backbone", "small_cnn"]  # quick on a CPU


# ------------------------------------------------------------------ pieces
def test_queue_enqueues_dequeues_the_oldest_and_wraps_around():
    queue = KeyQueue(size=5, dim=2)
    keys = F.normalize(torch.randn(8, 2), dim=1)
    queue.enqueue(keys[:3])
    assert int(queue.pointer) == 3 and torch.allclose(queue.keys[:3], keys[:3])
    queue.enqueue(keys[3:7])  # 4 more: 2 fill the end, 2 wrap over the oldest (keys 0 and 1 leave)
    assert int(queue.pointer) == 2
    assert torch.allclose(queue.ordered(), keys[2:7])  # oldest to newest
    queue.enqueue(torch.cat([keys, keys]) * 3)  # more than the queue: only the last 5, normalised
    assert torch.allclose(queue.ordered(), keys[3:8]) and int(queue.pointer) == 2
    assert set(dict(queue.named_buffers())) == {"keys", "pointer"}  # saved in checkpoints


def test_momentum_update_moves_the_copy_towards_the_online_network():
    online = nn.Linear(3, 2)
    target = momentum_copy(online)
    assert not any(p.requires_grad for p in target.parameters())
    before = target.weight.detach().clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    ema_update([(online, target)], momentum=0.9)
    assert torch.allclose(target.weight, 0.9 * before + 0.1 * online.weight)
    ema_update([(online, target)], momentum=0.0)
    assert torch.equal(target.weight, online.weight)


def test_split_batch_norm_normalises_each_split_like_its_own_batch():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
    split = use_split_batch_norm(nn.Sequential(momentum_copy(bn)), splits=4)[0].train()
    assert isinstance(split, SplitBatchNorm2d) and set(split.state_dict()) == set(bn.state_dict())
    x = torch.randn(8, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    expected = torch.cat([F.batch_norm(part, None, None, bn.weight, bn.bias, training=True) for part in x.split(2)])
    y = split(x)
    assert torch.allclose(y, expected, atol=1e-5) and y.is_contiguous(memory_format=torch.channels_last)
    splits = x.view(4, 2, 4, 5, 5)  # (split, image in split, C, H, W)
    mean = splits.mean((1, 3, 4)).mean(0)
    var = (splits.var((1, 3, 4), unbiased=True)).mean(0)
    assert torch.allclose(split.running_mean, 0.1 * mean, atol=1e-6)  # momentum 0.1 from zeros
    assert torch.allclose(split.running_var, 0.9 + 0.1 * var, atol=1e-6)  # from ones
    assert split_count(8, 4) == 4 and split_count(6, 4) == 3 and split_count(3, 8) == 1
    split.eval()  # eval: plain batch norm with the running statistics
    expected = F.batch_norm(x, split.running_mean, split.running_var, bn.weight, bn.bias, training=False)
    assert torch.allclose(split(x), expected, atol=1e-5)


def test_a_moco_step_enqueues_every_key_and_moves_the_key_encoder():
    torch.manual_seed(0)
    model = MoCo(backbone="small_cnn", in_channels=1, num_train=100, batch_size=4)
    assert model.hparams.queue_size == 100  # min(65536, training images)
    key_weight = next(model.key_encoder.parameters()).detach().clone()
    with torch.no_grad():
        next(model.encoder.parameters()).add_(1.0)
    views = torch.randn(8, 1, 28, 28)  # 4 images x 2 views
    loss, metrics = model.step(views, "train")
    assert int(model.queue.pointer) == 8 and torch.isfinite(loss) and set(metrics) >= {"acc_top1", "acc_top5"}
    moved = next(model.key_encoder.parameters())
    assert torch.allclose(moved, 0.99 * key_weight + 0.01 * next(model.encoder.parameters()))
    model.step(views, "val")
    assert int(model.queue.pointer) == 8  # validation leaves the queue alone


# ------------------------------------------------------------------ learning
@pytest.fixture(scope="module")
def stripes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stripes")
    write_stripes(folder)
    return folder


def probe_accuracy(data_dir, encoder: list[str], name: str) -> float:
    """Test accuracy of the logistic-regression stage on the frozen encoder, trained with all 256 labels."""
    lr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--name", name, *encoder])
    lr_test.main(["--checkpoint", name, "--data-dir", str(data_dir)])
    return json.loads((models_dir("logistic_regression") / f"{name}.test.json").read_text())["acc"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDSIMCLR_OUTPUT_ROOT", str(root))
        yield root


@pytest.fixture(scope="module")
def random_init(stripes, outputs):
    return probe_accuracy(stripes, ["--encoder", "random", *BACKBONE], "random-small_cnn")


@pytest.fixture(scope="module")
def raw_pixels(stripes, outputs):
    """The L-BFGS probe on the raw pixels: the stripes' random phase leaves no linear trace of the orientation."""
    return probe_accuracy(stripes, ["--encoder", "pixels", "--solver", "lbfgs"], "pixels-lbfgs")


@pytest.mark.parametrize("method", METHODS)
def test_pretraining_learns_what_a_random_encoder_misses(method, stripes, outputs, random_init, raw_pixels, capsys):
    train = importlib.import_module(f"pretrain.{method}.train")
    run = train.main(["--dataset", "breastmnist", "--data-dir", str(stripes), *BACKBONE, "--aug", "natural",
                      "--select-by", "knn", "--epochs", "10", "--batch-size", "64", "--name", f"{method}-stripes"])
    assert run == models_dir(method) / f"{method}-stripes.ckpt"
    # the online kNN monitor, logged for every method, chose the checkpoint and is in the run's record
    assert {"val/knn_acc", "val/knn_auroc"} <= scalar_tags(models_dir(method) / "tb_logs" / f"{method}-stripes")
    record = json.loads(run.with_suffix(".config.json").read_text())
    assert record["selected_by"] == "val/knn_auroc" and 0.5 < record["selected_validation_metrics"]["val/knn_auroc"] <= 1
    accuracy = probe_accuracy(stripes, ["--encoder", f"{method}-stripes"], f"probe-{method}")
    print(f"{method}: probe accuracy {accuracy:.3f}, random-init {random_init:.3f}")
    assert accuracy >= 0.85 and accuracy >= random_init + 0.15, (accuracy, random_init)  # chance: 0.5
    # the SimCLR paper's L-BFGS probe reads the same features as well, and raw pixels fall far behind
    lbfgs = probe_accuracy(stripes, ["--encoder", f"{method}-stripes", "--solver", "lbfgs"], f"lbfgs-{method}")
    assert lbfgs >= 0.85 and lbfgs >= raw_pixels + 0.15, (lbfgs, raw_pixels)
    # finetuning takes the encoder too, by run name, with no method named anywhere downstream
    finetune_train.main(["--dataset", "breastmnist", "--data-dir", str(stripes), "--init", f"{method}-stripes",
                         "--epochs", "1", "--name", f"finetune-{method}"])
    finetune_test.main(["--checkpoint", f"finetune-{method}", "--data-dir", str(stripes)])
    result = json.loads((models_dir("resnet") / f"finetune-{method}.test.json").read_text())
    assert result["init"] == str(run) and 0 <= result["acc"] <= 1


# ------------------------------------------------------------------ resume
def final_state(root, name):
    last = root / "pretrain/moco/models/tb_logs" / name / "version_0/checkpoints/last.ckpt"
    return torch.load(last, weights_only=True)


def test_moco_resumes_after_sigkill_with_its_queue_and_key_encoder(data_dir, tmp_path):
    args = [sys.executable, str(REPO / "pretrain/moco/train.py"), "--dataset", "breastmnist", "--data-dir",
            str(data_dir), "--epochs", "4", "--batch-size", "16", "--queue-size", "40", *BACKBONE]
    env = {**os.environ, "MEDSIMCLR_OUTPUT_ROOT": str(tmp_path / "whole")}
    subprocess.run(args, env=env, check=True, capture_output=True)
    env["MEDSIMCLR_OUTPUT_ROOT"] = str(tmp_path / "killed")
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed/pretrain/moco/models/tb_logs/moco-breastmnist/version_0/checkpoints/last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = torch.load(last, weights_only=True)
    assert killed["epoch"] < 3 and int(killed["state_dict"]["queue.pointer"]) == 3 * 32 * (killed["epoch"] + 1) % 40
    resumed = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    whole, after = final_state(tmp_path / "whole", "moco-breastmnist"), final_state(tmp_path / "killed",
                                                                                  "moco-breastmnist")
    assert (after["epoch"], after["global_step"]) == (whole["epoch"], whole["global_step"]) == (3, 12)
    for key in ("queue.keys", "queue.pointer", "key_encoder.features.0.0.weight", "encoder.features.6.0.weight"):
        assert torch.allclose(after["state_dict"][key].float(), whole["state_dict"][key].float(), atol=1e-6), key


# ------------------------------------------------------------------ BYOL
def test_byol_target_momentum_follows_a_cosine_from_its_base_to_one():
    assert target_momentum(0.99, 0.0) == pytest.approx(0.99)
    assert target_momentum(0.99, 0.5) == pytest.approx(0.995)
    assert target_momentum(0.99, 1.0) == pytest.approx(1.0)
    values = [target_momentum(0.996, k / 10) for k in range(11)]
    assert values == sorted(values)


def test_byol_loss_is_the_normalised_squared_error():
    torch.manual_seed(3)
    p, z = torch.randn(6, 5, requires_grad=True), torch.randn(6, 5, requires_grad=True)
    with torch.no_grad():
        naive = sum(float(((p[i] / p[i].norm() - z[i] / z[i].norm()) ** 2).sum()) for i in range(6)) / 6
    loss = byol_loss(p, z)
    assert loss.item() == pytest.approx(naive, rel=1e-5)
    loss.backward()
    assert p.grad is not None and z.grad is None  # the target gets no gradient
    assert byol_loss(z.detach(), 2 * z.detach()).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(z.detach(), -z.detach()).item() == pytest.approx(4.0)


def test_byol_target_follows_the_schedule_during_training(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSIMCLR_OUTPUT_ROOT", str(tmp_path))
    byol_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "3", "--batch-size", "16",
                     *BACKBONE, "--val-every", "3"])
    logged = scalar_values(tmp_path / "pretrain/byol/models/tb_logs/byol-breastmnist", "train/target_momentum")
    assert len(logged) == 3 and 0.99 <= logged[0] < logged[1] < logged[2] <= 1.0  # 9 steps: cosine from 0.99 to 1
    saved = torch.load(tmp_path / "pretrain/byol/models/byol-breastmnist.ckpt", weights_only=True)
    assert {"encoder.features.0.0.weight", "target_encoder.features.0.0.weight", "predictor.0.weight"} <= set(
        saved["state_dict"]) and saved["hyper_parameters"]["method"] == "byol"
