"""One process of a real 2-process DDP run on the CPU (gloo), for tests/common/training/test_ddp.py.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/helpers/ddp_worker.py RESULTS DATA_DIR

Launched by torchrun, exactly as the README's torchrun example launches a stage. Each process:
  1. computes, before any process group exists, each method's loss and gradients on a fixed global batch in one
     process (the reference);
  2. joins the gloo group and computes them again on its half of that batch, gathering across the 2 processes;
  3. runs one MoCo training step and records the keys it made and its queue afterwards;
  4. records the training images each rank's loader gives for two epochs, and under a real Lightning DDP fit;
  5. runs the real command lines: SimCLR, MoCo v2 and BYOL pretraining, SimCLR --resume, the linear probe and
     finetuning, all with --devices 2 (the output root comes from $MEDSIMCLR_OUTPUT_ROOT).
Each rank writes what it measured to RESULTS/rank<r>.pt; the test compares.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytorch_lightning as pl
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from common.training import distributed  # noqa: E402
from common.data.datamodule import MedMNISTDataModule  # noqa: E402
from downstream.logistic_regression import train as lr_train  # noqa: E402
from downstream.resnet import train as finetune_train  # noqa: E402
from pretrain import METHODS, method_class  # noqa: E402
from pretrain.byol import train as byol_train  # noqa: E402
from pretrain.moco import train as moco_train  # noqa: E402
from pretrain.simclr import train as simclr_train  # noqa: E402
from utils import QUIET_WARNINGS  # noqa: E402

FLAG, IMAGES, SIZE = "breastmnist", 8, 28  # images per process in the fixed batch
NETWORK = dict(backbone="small_cnn", in_channels=1, dataset=FLAG, size=SIZE, num_train=64)


def fixed_views(world: int) -> torch.Tensor:
    """(2 * world * IMAGES, 1, 28, 28): rows i and N + i are the two views of image i, N = world * IMAGES."""
    return torch.randn(2 * world * IMAGES, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def local_views(views: torch.Tensor, rank: int) -> torch.Tensor:
    first, second = views.chunk(2)
    rows = slice(rank * IMAGES, (rank + 1) * IMAGES)
    return torch.cat([first[rows], second[rows]])


def new_model(name: str):
    torch.manual_seed(0)
    return method_class(name)(**NETWORK).eval()  # batch norm from running statistics: equal whatever the batch


def loss_and_gradients(model, views: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    loss, _ = model.step(views, "val")
    loss.backward()
    return float(loss.detach()), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def equality_check(world: int, rank: int, reference: dict) -> dict:
    """Each method's loss and gradients with the batch split across processes; gradients averaged over the
    processes as DDP averages them."""
    out = {}
    for name in METHODS:
        model = new_model(name)
        loss, grads = loss_and_gradients(model, local_views(fixed_views(world), rank))
        for grad in grads.values():
            dist.all_reduce(grad)
            grad /= world
        losses = [None] * world
        dist.all_gather_object(losses, loss)
        out[name] = {"losses": losses, "grads": grads, "reference": reference[name]}
    return out


def moco_queue_check(world: int, rank: int) -> dict:
    """One MoCo training step on this process's half: the keys it made and the whole queue after it."""
    model = new_model("moco").train()
    made = []
    keys = model.keys
    model.keys = lambda views, split: made.append(keys(views, split)) or made[-1]
    before = model.queue.ordered().clone()
    model.step(local_views(fixed_views(world), rank), "train")
    n = IMAGES
    enqueued = torch.nn.functional.normalize(made[0].roll(n, dims=0), dim=1)  # symmetric: each view's key, swapped
    return {"before": before, "after": model.queue.ordered().clone(), "own_keys": enqueued}


class RecordImages(pl.Callback):
    """The training-image indices (carried as labels) of every batch this rank trains on, per epoch."""

    def __init__(self):
        self.seen: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.setdefault(trainer.current_epoch, []).extend(batch[1].tolist())


def sampler_check(data_dir: str, world: int, rank: int) -> dict:
    """Indices given to this rank by the loader (two epochs), and seen by a real Lightning DDP fit of SimCLR."""
    data = MedMNISTDataModule(FLAG, data_dir=data_dir, batch_size=5, seed=3, drop_last=False, download=False).load()
    images, _ = data.splits["train"]
    data.splits["train"] = (images[:-1], torch.arange(len(images) - 1))  # an odd count: one image sits out
    data.trainer = SimpleNamespace(global_rank=rank, world_size=world)
    loader, by_loader = data.train_dataloader(), {}
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        by_loader[epoch] = [int(i) for _, labels in loader for i in labels]
    data.trainer = None
    recorder = RecordImages()
    model = method_class("simclr")(**{**NETWORK, "num_train": len(images) - 1}, batch_size=5, max_epochs=2)
    trainer = pl.Trainer(accelerator="cpu", devices=world, strategy="ddp", max_epochs=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
                         callbacks=[recorder], enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    return {"n": len(images) - 1, "by_loader": by_loader, "by_fit": recorder.seen}


def command_lines(data_dir: str) -> None:
    common = ["--dataset", FLAG, "--data-dir", data_dir, "--accelerator", "cpu", "--devices", "2"]
    small = [*common, "--backbone", "small_cnn", "--batch-size", "8", "--monitor-every", "1", "--select-by", "knn"]
    for stage, name in ((simclr_train, "ddp-simclr"), (moco_train, "ddp-moco"), (byol_train, "ddp-byol")):
        stage.main([*small, "--epochs", "1", "--name", name])
    simclr_train.main([*small, "--epochs", "2", "--name", "ddp-simclr", "--resume", "--overwrite"])
    lr_train.main([*common, "--encoder", "ddp-simclr", "--epochs", "3", "--name", "ddp-probe"])
    finetune_train.main([*common, "--init", "ddp-simclr", "--epochs", "1", "--batch-size", "8", "--name", "ddp-finetune"])


def main(results: str, data_dir: str) -> None:
    warnings.filterwarnings("ignore", message=QUIET_WARNINGS)
    warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|sync_dist).*")
    torch.set_num_threads(1)
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    reference = {}
    for name in METHODS:  # one process, the whole batch: before the group exists, gather is the identity
        assert distributed.world_size() == 1
        reference[name] = dict(zip(("loss", "grads"), loss_and_gradients(new_model(name), fixed_views(world))))
    dist.init_process_group("gloo")
    out = {"world": world, "rank": rank, "equality": equality_check(world, rank, reference),
           "moco_queue": moco_queue_check(world, rank), "sampler": sampler_check(data_dir, world, rank)}
    command_lines(data_dir)
    torch.save(out, Path(results) / f"rank{rank}.pt")
    dist.barrier()


if __name__ == "__main__":
    main(*sys.argv[1:3])
