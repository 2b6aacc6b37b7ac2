"""Finetuning: the whole encoder plus a new linear layer, trained on images; and a saved one rebuilt (`finetuned`).

Started from a pretrained encoder it is finetuning; started from random weights it is the supervised baseline.
"""
from __future__ import annotations

from pathlib import Path

import torch

from common.data.datamodule import MedMNISTDataModule
from common.evaluation.classifier import ClassifierModule
from common.evaluation.open_checkpoint import check_classes
from common.training.memory_format import memory_format
from common.data.normalize import normalize, to_unit
from downstream.resnet.hparams import LR
from models.backbones import DEFAULT_BACKBONE, backbone_dims, build_backbone, require_reads
from models.checkpoints import build_from_checkpoint, our_state_dict
from models.heads import linear_head


class FinetuneClassifier(ClassifierModule):
    """uint8 images (N, C, H, W) -> logits (N, num_classes), with any backbone of the registry."""

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        stem: str | None = None,
        in_channels: int = 3,
        size: int = 28,
        num_classes: int = 2,
        multilabel: bool = False,
        dataset: str = "bloodmnist",
        lr: float = LR,
        max_epochs: int = 100,
        init: str | None = None,
        channels_last: bool = True,
        stage: str = "resnet",
        resize: int | None = None,
        patch_topk: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = build_backbone(backbone, in_channels, size, stem, resize, patch_topk)
        self.hparams.stem = self.encoder.backbone_options["stem"]
        self.head = linear_head(self.encoder.feature_dim, num_classes)
        self.memory_format = memory_format(backbone_dims(self.encoder), channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        images, labels = batch
        return normalize(to_unit(images)).contiguous(memory_format=self.memory_format), labels

    def configure_model(self) -> None:
        self.to(memory_format=self.memory_format)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def finetuned(path: Path, ckpt: dict, data: MedMNISTDataModule) -> FinetuneClassifier:
    """The classifier saved as `path` (its checkpoint `ckpt`), checked against the data set."""
    head = our_state_dict(ckpt).get("head.weight")  # missing: load_weights names it
    model = build_from_checkpoint(FinetuneClassifier, ckpt, f"--checkpoint {path.name}",
                                  num_classes=data.num_classes if head is None else head.shape[0],
                                  multilabel=data.multilabel, dataset=data.flag)
    check_classes(model, data, path)
    require_reads(model.encoder, data.num_channels, data.size, f"--checkpoint {path.name}",
                  "pass the --dataset and --size it was trained on", data.dims)
    return model
