"""Logistic regression (a linear probe): one linear layer on frozen encoder features (computed once, see
common.evaluation.features). The logistic-regression stage trains it; pretraining's test.py and the benchmark use it too.

A linear layer on 512 features costs microseconds per minibatch, while one Lightning training step
costs milliseconds of bookkeeping (Lightning's optimizer wrapper alone ~10 ms here). So one
Lightning step is one epoch: the loader hands over the whole shuffled training split and
`training_step` runs the study's minibatch AdamW updates over it with the bare optimizer (same
updates, ~20x faster; checkpoints, logging and resume stay per epoch, global_step counts updates).
"""
from __future__ import annotations

import torch

from common.evaluation import lbfgs_probe
from common.evaluation.classifier import ClassifierModule
from common.evaluation.metrics import classification_loss
from common.evaluation.probe_defaults import BATCH_SIZE, EPOCHS, GAMMA, LR, MILESTONES, WEIGHT_DECAY
from common.training.nonfinite import check_finite
from models.heads import linear_head
from utils import torch_threads



def count_optimizer_step(trainer) -> None:
    """Advance trainer.global_step for an update made with the bare optimizer (Lightning counts only
    the steps of its wrapper; ModelCheckpoint skips saves when global_step has not moved)."""
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    progress.increment_ready()
    progress.increment_completed()


class LogisticRegressionModule(ClassifierModule):
    """Features (N, feature_dim) -> logits (N, num_classes). Records the encoder it was trained on (and, for
    a random-init or ImageNet encoder, its backbone, stem, resize and top-K patch head) and which of its features
    it read (`features`, models.feature_choice: test.py reads the same)."""

    def __init__(
        self,
        feature_dim: int = 512,
        num_classes: int = 2,
        multilabel: bool = False,
        dataset: str = "bloodmnist",
        lr: float = LR,
        weight_decay: float = WEIGHT_DECAY,
        max_epochs: int = EPOCHS,
        encoder: str | None = None,
        encoder_md5: str | None = None,
        seed: int = 0,
        batch_size: int = BATCH_SIZE,
        backbone: str | None = None,
        stem: str | None = None,
        stage: str = "logistic_regression",
        solver: str = "adamw",
        resize: int | None = None,
        patch_topk: int | None = None,
        features: str = "last",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.head = linear_head(feature_dim, num_classes)
        self.automatic_optimization = False  # minibatches are stepped inside training_step (see above)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        """One epoch: AdamW updates on consecutive minibatches of the shuffled split (N, D); with the L-BFGS
        solver, the whole fit (every strength of its grid, the best on the validation features)."""
        features, labels = batch
        if self.hparams.solver == "lbfgs":
            return self.lbfgs_fit(features, labels)
        optimizer, size = self.optimizers().optimizer, self.hparams.batch_size  # the bare AdamW: see above
        losses = []
        with torch_threads(1):  # microsecond ops: more threads only add sync cost (170x under CPU contention)
            for start in range(0, len(features), size):
                loss = classification_loss(self(features[start:start + size]), labels[start:start + size],
                                           self.hparams.multilabel)
                check_finite(loss, self.trainer)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                count_optimizer_step(self.trainer)
                losses.append(loss.detach())
        epoch_loss = torch.stack(losses).mean()
        self.log("train/loss", epoch_loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(features))
        return epoch_loss

    def lbfgs_fit(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        val = self.trainer.datamodule.features["val"]
        layer, l2, _ = lbfgs_probe.select((features, labels), val, self.head.out_features, self.hparams.multilabel)
        self.head.load_state_dict(layer.to(self.head.weight.device).state_dict())
        count_optimizer_step(self.trainer)
        loss = classification_loss(self(features), labels, self.hparams.multilabel).detach()
        self.log_dict({"train/loss": loss, "train/l2": l2}, on_step=False, on_epoch=True, prog_bar=True,
                      batch_size=len(features))
        return loss

    def on_train_epoch_end(self) -> None:
        if self.hparams.solver == "adamw":  # L-BFGS fits without the optimizer and its schedule
            self.lr_schedulers().step()

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        milestones = [int(f * self.hparams.max_epochs) for f in MILESTONES]
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=GAMMA)
        return [optimizer], [scheduler]
