"""Frozen-encoder features, computed once per split (eval mode, no gradients, large batches)."""
from __future__ import annotations

import pytorch_lightning as pl
import torch

from common.data.datamodule import SPLITS, EpochShuffler, InMemoryLoader, MedMNISTDataModule, eval_batch
from common.training.memory_format import channels_last
from common.data.normalize import normalize, to_unit

FEATURE_BATCH = 1024  # images per forward pass when extracting features (fewer for large images: data.eval_batch)


def feature_device(accelerator: str) -> torch.device:
    """Where features are computed outside a Trainer: the GPU when --accelerator allows one and there is one."""
    wants_gpu = accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def extract_features(encoder: torch.nn.Module, images: torch.Tensor, device: torch.device,
                     batch_size: int = FEATURE_BATCH) -> torch.Tensor:
    """uint8 images (N, C, H, W) or volumes (N, C, D, H, W) -> features (N, F) on `device`. Leaves the encoder
    in eval mode."""
    encoder.eval().to(device)
    batch_size, chunks = eval_batch(images, batch_size), []
    for start in range(0, len(images), batch_size):
        x = normalize(to_unit(images[start:start + batch_size].to(device)))
        chunks.append(encoder(channels_last(x)).float())
    return torch.cat(chunks) if chunks else torch.empty(0, getattr(encoder, "feature_dim", 0), device=device)


class FeatureDataModule(pl.LightningDataModule):
    """The MedMNIST DataModule's splits, passed once through a frozen encoder and kept in memory.

    `splits`: which to encode (evaluating a trained head needs only the test split)."""

    def __init__(self, data: MedMNISTDataModule, encoder: torch.nn.Module, device: torch.device | str = "cpu",
                 splits: tuple[str, ...] = SPLITS):
        super().__init__()
        self.data, self.encoder, self.splits = data, encoder, splits
        self.device = torch.device(device)
        self.features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.features:
            return
        self.data.load()
        if self.trainer is not None:
            self.device = self.trainer.strategy.root_device
        for split in self.splits:
            images, labels = self.data.splits[split]
            self.features[split] = (extract_features(self.encoder, images, self.device), labels.to(self.device))

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> InMemoryLoader:
        features, labels = self.features[split]
        return InMemoryLoader(features, labels, min(batch_size, len(features)), EpochShuffler(shuffle, self.data.seed))

    def train_dataloader(self) -> InMemoryLoader:
        """The whole shuffled split per epoch: the logistic-regression module minibatches it itself."""
        return self._loader("train", len(self.features["train"][0]), shuffle=True)

    def val_dataloader(self) -> InMemoryLoader:
        return self._loader("val", self.data.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> InMemoryLoader:
        return self._loader("test", self.data.eval_batch_size, shuffle=False)
