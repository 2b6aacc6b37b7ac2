"""Checkpoints synthesised in the study's exact format: Lightning 1.9 layout, its keys and shapes,
hyper-parameters pickled as PL 1.9's `pytorch_lightning.utilities.parsing.AttributeDict`."""
from __future__ import annotations

from contextlib import contextmanager

import pytorch_lightning.utilities.parsing as pl_parsing
import torch
import torchvision
from torch import nn


class AttributeDict(dict):
    """Stands in for PL 1.9's class while pickling, so the file names it exactly as 1.9 did."""


AttributeDict.__module__ = "pytorch_lightning.utilities.parsing"


@contextmanager
def pl19_attribute_dict():
    original = pl_parsing.AttributeDict
    pl_parsing.AttributeDict = AttributeDict
    try:
        yield
    finally:
        pl_parsing.AttributeDict = original


def study_simclr_net(hidden_dim: int = 128) -> nn.Module:
    """The study's `convnet`: resnet18(num_classes=4*hidden) with fc -> Sequential(fc, ReLU, Linear)."""
    net = torchvision.models.resnet18(num_classes=4 * hidden_dim)
    net.fc = nn.Sequential(net.fc, nn.ReLU(inplace=True), nn.Linear(4 * hidden_dim, hidden_dim))
    return net


def _lightning19(state_dict: dict, hparams: dict, optimizer: torch.optim.Optimizer, epoch: int = 9) -> dict:
    return {
        "epoch": epoch,
        "global_step": 10 * (epoch + 1),
        "pytorch-lightning_version": "1.9.0",
        "state_dict": state_dict,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": epoch + 1, "completed": epoch}},
                               "epoch_loop.batch_progress": {"total": {"ready": 10, "completed": 10}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_acc', 'mode': 'max', 'every_n_train_steps': 0}": {
            "monitor": "val_acc", "best_model_score": torch.tensor(0.9), "best_model_path": "/study/model.ckpt",
            "current_score": torch.tensor(0.9), "dirpath": "/study", "best_k_models": {"/study/model.ckpt": torch.tensor(0.9)},
            "kth_best_model_path": "/study/model.ckpt", "kth_value": torch.tensor(0.9), "last_model_path": ""}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": AttributeDict(hparams),
    }


def save(checkpoint: dict, path) -> None:
    checkpoint = {**checkpoint, "hyper_parameters": AttributeDict(checkpoint["hyper_parameters"])}
    with pl19_attribute_dict():
        torch.save(checkpoint, path)


def simclr_checkpoint(path, seed: int = 0) -> nn.Module:
    """A study SimCLR checkpoint at `path`; returns the torchvision network it holds."""
    torch.manual_seed(seed)
    net = study_simclr_net().eval()
    state = {f"convnet.{k}": v for k, v in net.state_dict().items()}
    hparams = {"hidden_dim": 128, "lr": 5e-4, "temperature": 0.07, "weight_decay": 1e-4, "max_epochs": 10}
    save(_lightning19(state, hparams, torch.optim.AdamW(net.parameters())), path)
    return net


def logistic_regression_checkpoint(path, num_classes: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    head = nn.Linear(512, num_classes)
    hparams = {"feature_dim": 512, "num_classes": num_classes, "lr": 1e-3, "weight_decay": 1e-3, "max_epochs": 100}
    save(_lightning19({f"model.{k}": v for k, v in head.state_dict().items()}, hparams,
                      torch.optim.AdamW(head.parameters())), path)
    return head


def resnet_checkpoint(path, num_classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(num_classes=num_classes).eval()
    hparams = {"num_classes": num_classes, "lr": 1e-3, "momentum": 0.9}
    save(_lightning19({f"backbone.{k}": v for k, v in net.state_dict().items()}, hparams,
                      torch.optim.Adam(net.parameters())), path)
    return net
