"""SimCLR as a LightningModule: encoder f, projection head g, NT-Xent on two augmented views."""
from __future__ import annotations

import torch
import pytorch_lightning as pl

from common.augment import build_augmentation
from common.normalize import normalize, to_unit
from models import ProjectionHead, ResNetEncoder
from models.heads import PROJECTION_HIDDEN_DIM
from pretrain.simclr.loss import nt_xent

# the study's defaults (REFERENCE.md, "Pretraining")
LR = 5e-4
WEIGHT_DECAY = 1e-4
TEMPERATURE = 0.07
LR_FLOOR_DIVISOR = 50  # cosine annealing down to lr / 50
TOP_K = 5  # acc_top5: positive ranked among the 5 most similar candidates
VAL_AUG_SEED_OFFSET = 1_000_003  # validation views are the same every epoch, and differ from training's


class SimCLRModule(pl.LightningModule):
    """Batches of uint8 images -> two views each (augmented on the device) -> NT-Xent loss."""

    def __init__(
        self,
        arch: str = "resnet18",
        in_channels: int = 3,
        dataset: str = "bloodmnist",
        size: int = 28,
        aug: str = "novel",
        hidden_dim: int = PROJECTION_HIDDEN_DIM,
        lr: float = LR,
        weight_decay: float = WEIGHT_DECAY,
        temperature: float = TEMPERATURE,
        max_epochs: int = 500,
        seed: int = 0,
        init: str | None = None,
        channels_last: bool = True,
        stage: str = "simclr",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = ResNetEncoder(arch, in_channels)
        self.projector = ProjectionHead(self.encoder.feature_dim, hidden_dim)
        self.augment = build_augmentation(aug, size)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.generators: dict[str, torch.Generator] = {}
        self.restored_rng: dict[str, torch.Tensor] = {}  # generator states read from a checkpoint

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(views))  # (2N, hidden_dim)

    def generator(self, split: str, reset: bool = False) -> torch.Generator:
        """The augmentation's generator on this device, seeded from --seed."""
        if reset or split not in self.generators or self.generators[split].device != self.device:
            seed = self.hparams.seed + (VAL_AUG_SEED_OFFSET if split == "val" else 0)
            self.generators[split] = torch.Generator(device=self.device).manual_seed(seed)
            if split in self.restored_rng and not reset:  # --resume: continue the interrupted random stream
                self.generators[split].set_state(self.restored_rng.pop(split))
        return self.generators[split]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["augmentation_rng"] = {"train": self.generator("train").get_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.restored_rng = dict(checkpoint.get("augmentation_rng", {}))

    def on_validation_epoch_start(self) -> None:
        self.generator("val", reset=True)

    def on_test_epoch_start(self) -> None:
        self.generator("val", reset=True)

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        images, labels = batch
        split = "train" if self.trainer is not None and self.trainer.training else "val"
        x = to_unit(images)
        generator = self.generator(split)
        views = torch.cat([self.augment(x, generator), self.augment(x, generator)])  # (2N, C, H, W)
        return normalize(views).contiguous(memory_format=self.memory_format), labels

    def _shared_step(self, batch, split: str) -> torch.Tensor:
        views, _ = batch
        z = self.gather_views(self(views))
        loss, rank = nt_xent(z, self.hparams.temperature)
        rank = rank.float()
        self.log_dict({
            f"{split}/loss": loss,
            f"{split}/acc_top1": (rank == 0).float().mean(),
            f"{split}/acc_top5": (rank < TOP_K).float().mean(),
            f"{split}/acc_mean_pos": 1 + rank.mean(),
        }, on_step=False, on_epoch=True, prog_bar=split == "train", batch_size=len(views) // 2, sync_dist=True)
        return loss

    def gather_views(self, z: torch.Tensor) -> torch.Tensor:
        """Negatives from every device: (2n, D) per device -> (2nW, D), views kept in two halves."""
        if self.trainer is None or self.trainer.world_size == 1:
            return z
        gathered = self.all_gather(z, sync_grads=True)  # (W, 2n, D)
        n = z.shape[0] // 2
        return torch.cat([gathered[:, :n].flatten(0, 1), gathered[:, n:].flatten(0, 1)])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True, batch_size=1)
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=self.hparams.max_epochs, eta_min=self.hparams.lr / LR_FLOOR_DIVISOR)
        return [optimizer], [scheduler]

    def configure_model(self) -> None:
        self.to(memory_format=self.memory_format)
