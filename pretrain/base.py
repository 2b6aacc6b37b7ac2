"""What every pretraining method shares, so that a method adds only its networks and its loss.

`PretrainModule` owns: the encoder (built by the backbone registry from the dataset's channels), the two
augmented views of each batch made on the device with a seeded generator (saved in checkpoints, so a
resumed run continues the same random stream), the optimiser and cosine schedule, logging, gathering
across devices, and the metadata a checkpoint records (method, backbone, stem, channels, size, dataset).

A method subclasses it and its hparams class (name and defaults), builds its heads in `__init__`,
and implements `step(views, split) -> (loss, metrics)` on the views (2N, C, H, W), or (2N, C, D, H, W) for
volumes: rows i and N + i are the two views of image i.
"""
from __future__ import annotations

import pytorch_lightning as pl
import torch
import torchvision
from torch import nn

from common.training import distributed
from common.augment.images import build_augmentation
from common.augment.names import AUG_STRENGTH
from common.evaluation.features import extract_features
from common.evaluation.knn import knn_metrics
from common.training.memory_format import memory_format
from common.data.normalize import normalize, to_unit
from common.data.slices import mid_slices
from models.backbones import DEFAULT_BACKBONE, backbone_dims, build_backbone
from models.checkpoints import load_weights
from models.feature_choice import LAST
from models.resize import resize_images
from models.stages import read_features
from pretrain.hparams import OPTIMIZERS, SGD_MOMENTUM, MethodHparams

VIEW_GRID_IMAGES = 16  # images (each with its two views) in the TensorBoard grid of the first batch
VAL_AUG_SEED_OFFSET = 1_000_003  # validation views are the same every epoch, and differ from training's


def knn_monitor_metrics(encoder: nn.Module, splits: dict, num_classes: int, multilabel: bool,
                        device: torch.device) -> dict[str, float]:
    """val/knn_acc, val/knn_auroc of common.evaluation.knn's classifier: `encoder`'s features of the unaugmented
    splits["train"] images (the bank, with their labels) and splits["val"] images (the queries)."""
    (bank, bank_labels), (queries, query_labels) = splits["train"], splits["val"]
    metrics = knn_metrics(extract_features(encoder, bank, device), bank_labels,
                          extract_features(encoder, queries, device), query_labels, num_classes, multilabel)
    return {"val/knn_acc": metrics["acc"], "val/knn_auroc": metrics["auroc"]}


class PretrainModule(MethodHparams, pl.LightningModule):
    """Batches of uint8 images -> two views each (augmented on the device) -> the method's `step`. Its name and
    defaults: the class attributes of MethodHparams, set by the method's hparams class
    (pretrain/<method>/hparams.py)."""

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        stem: str | None = None,
        in_channels: int = 3,
        dataset: str = "bloodmnist",
        size: int = 28,
        aug: str = "novel",
        aug_strength: float = AUG_STRENGTH,
        optimizer: str | None = None,
        lr: float | None = None,
        weight_decay: float | None = None,
        batch_size: int = 256,
        num_train: int | None = None,
        max_epochs: int = 100,
        seed: int = 0,
        init: str | None = None,
        channels_last: bool = True,
        resize: int | None = None,
        patch_topk: int | None = None,
        features: str = LAST,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = build_backbone(backbone, in_channels, size, stem, resize, patch_topk)
        read_features(self.encoder, features)  # a stage the network lacks: an error now, not at the first validation
        self.hparams.update(method=self.NAME, stem=self.encoder.backbone_options["stem"],
                            optimizer=optimizer or self.OPTIMIZER,
                            weight_decay=self.WEIGHT_DECAY if weight_decay is None else weight_decay)
        if self.hparams.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.hparams.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        self.augment = build_augmentation(aug, resize or size, aug_strength)  # the crop resizes each view to the network's size
        self.memory_format = memory_format(backbone_dims(self.encoder), channels_last)
        self.generators: dict[str, torch.Generator] = {}
        self.restored_rng: dict[str, torch.Tensor] = {}  # generator states read from a checkpoint
        self.epoch_sums: dict[str, tuple] = {}  # split -> (metric names, sums weighted by images, images)
        self.validation_metrics: dict[str, float] = {}  # of the last validation, saved in checkpoints

    # -- what a method implements --------------------------------------------------------------------
    def step(self, views: torch.Tensor, split: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """views (2N, C, H, W) -> (loss, metrics to log as <split>/<name>)."""
        raise NotImplementedError

    def on_encoder_loaded(self) -> None:
        """Called after `--init` loaded the encoder's weights (momentum copies follow it here)."""

    # -- shared pieces for methods -----------------------------------------------------------------
    @staticmethod
    def gather(x: torch.Tensor, grads: bool = True) -> torch.Tensor:
        """(n, ...) on each device -> (W * n, ...), devices in rank order; gradients flow back to each device
        (common.training.distributed.gather)."""
        return distributed.gather(x, grads)

    def load_encoder_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        load_weights(self.encoder, state, source)
        self.on_encoder_loaded()

    # -- views --------------------------------------------------------------------------------------
    def generator(self, split: str, reset: bool = False) -> torch.Generator:
        """The augmentation's generator on this device, seeded from --seed."""
        if reset or split not in self.generators or self.generators[split].device != self.device:
            seed = self.hparams.seed + (VAL_AUG_SEED_OFFSET if split == "val" else 0)
            self.generators[split] = torch.Generator(device=self.device).manual_seed(seed)
            if split in self.restored_rng and not reset:  # --resume: continue the interrupted random stream
                self.generators[split].set_state(self.restored_rng.pop(split))
        return self.generators[split]

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        images, labels = batch
        split = "train" if self.trainer.training else "val"
        x, generator = to_unit(images), self.generator(split)
        views = torch.cat([self.augment(x, generator), self.augment(x, generator)])  # (2N, C, H, W)
        if split == "train" and self.trainer.global_step == 0 and self.trainer.current_epoch == 0:
            self.log_views(x, views)
        return normalize(views).contiguous(memory_format=self.memory_format), labels

    def log_views(self, images: torch.Tensor, views: torch.Tensor) -> None:
        """TensorBoard image `train/views`: the first batch's images, each beside its two views (volumes: their
        three mid-slices)."""
        experiment = getattr(self.logger, "experiment", None)
        if self.global_rank != 0 or not hasattr(experiment, "add_image"):
            return
        n = min(VIEW_GRID_IMAGES, len(images))
        originals = resize_images(images[:n], views.shape[-1])  # as large as the views (--resize)
        pictures = [mid_slices(x) for x in (originals, views[:n], views[len(images):len(images) + n])]  # volumes: slices
        rows = torch.stack(pictures, dim=1)  # (n, 3, C, H, W)
        grid = torchvision.utils.make_grid(rows.flatten(0, 1).float().cpu(), nrow=3, pad_value=1.0)
        experiment.add_image("train/views", grid, global_step=0)

    def on_validation_epoch_start(self) -> None:
        self.generator("val", reset=True)

    def on_test_epoch_start(self) -> None:
        self.generator("val", reset=True)

    # -- checkpoints --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["augmentation_rng"] = {"train": self.generator("train").get_state()}
        checkpoint["validation_metrics"] = dict(self.validation_metrics)  # recorded with the run's final model

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.restored_rng = dict(checkpoint.get("augmentation_rng", {}))

    # -- steps and logging: each split's metrics are summed on the device over the epoch and logged once at
    #    its end (a Lightning `self.log` costs about 1 ms of Python per metric and step: 5% of a small CNN's step)
    def _logged_step(self, batch, split: str) -> torch.Tensor:
        views, _ = batch
        loss, metrics = self.step(views, split)
        values, n = {"loss": loss, **metrics}, len(views) // 2
        with torch.no_grad():
            weighted = torch.stack([v.detach().float().reshape(()) for v in values.values()]) * n
        names, total, count = self.epoch_sums.get(split, (tuple(values), 0.0, 0))
        self.epoch_sums[split] = (names, total + weighted, count + n)
        return loss

    def _log_epoch(self, split: str, **extra: float) -> None:
        """<split>/<metric>: the mean over the epoch's images (then over devices), and `extra` as given."""
        if split not in self.epoch_sums:
            return
        names, total, count = self.epoch_sums.pop(split)
        logged = {**{f"{split}/{name}": value for name, value in zip(names, total / count)}, **extra}
        self.log_dict(logged, prog_bar=split == "train", sync_dist=True)
        if split == "val":
            self.validation_metrics = {name: float(value) for name, value in logged.items()}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._logged_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._logged_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._logged_step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train", **{"train/lr": self.optimizers().param_groups[0]["lr"]})

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", **self.knn_monitor())

    # -- the online monitor ------------------------------------------------------------------------
    def knn_monitor(self) -> dict[str, float]:
        """val/knn_acc, val/knn_auroc: a weighted kNN classifier (common.evaluation.knn) on the encoder's features of the
        unaugmented training images (the bank, with their labels) and validation images (the queries), read at
        --features (models.stages). Runs at each validation (every --monitor-every epochs); labels serve this
        monitor only; --monitor-dataset's splits when given (data.monitor)."""
        data = self.trainer.datamodule
        data = getattr(data, "monitor", None) or data
        if not getattr(data, "splits", None) or not data.num_classes:  # an unlabelled folder: no monitor
            return {}
        monitored = read_features(self.encoder, self.hparams.get("features") or LAST)  # not a submodule: no new keys
        return knn_monitor_metrics(monitored, data.splits, data.num_classes, data.multilabel, self.device)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    # -- optimisation -------------------------------------------------------------------------------
    def learning_rate(self) -> float:
        """--lr, or the method's LR scaled to the global batch when it names a reference batch."""
        if self.hparams.lr is not None:
            return self.hparams.lr
        world = self.trainer.world_size if self._trainer is not None else distributed.world_size()
        return self.LR if self.LR_BATCH is None else self.LR * self.hparams.batch_size * world / self.LR_BATCH

    def trained_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]  # momentum copies are not trained

    def configure_optimizers(self):
        self.hparams.lr = lr = self.learning_rate()  # recorded as used
        params, decay = self.trained_parameters(), self.hparams.weight_decay
        if self.hparams.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.hparams.max_epochs,
                                                               eta_min=lr * self.LR_FLOOR)
        return [optimizer], [scheduler]

    def configure_model(self) -> None:
        self.to(memory_format=self.memory_format)


TOP_K = 5  # acc_top5: the positive ranked among the 5 most similar candidates (the study's metric)


def rank_metrics(rank: torch.Tensor) -> dict[str, torch.Tensor]:
    """The study's contrastive metrics from the rank of each positive among its candidates (0 = first)."""
    rank = rank.float()
    return {"acc_top1": (rank == 0).float().mean(), f"acc_top{TOP_K}": (rank < TOP_K).float().mean(),
            "acc_mean_pos": 1 + rank.mean()}
