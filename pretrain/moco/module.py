"""MoCo v2 (Chen, Fan, Girshick, He 2020, "Improved Baselines with Momentum Contrastive Learning"):
queries from the encoder, keys from its momentum copy, negatives from a queue of past keys."""
from __future__ import annotations

import torch

from common.training import distributed
from models.heads import ProjectionHead
from pretrain.base import PretrainModule, rank_metrics
from pretrain.moco.batchnorm import use_split_batch_norm
from pretrain.moco.hparams import (BN_SPLITS, KEY_MOMENTUM, PROJECTION_DIM, QUEUE_SIZE, SYMMETRIC, TEMPERATURE,
                                   MoCoHparams)
from pretrain.moco.loss import info_nce
from pretrain.moco.key_queue import KeyQueue
from pretrain.momentum import ema_update, momentum_copy


def default_queue_size(num_train: int | None) -> int:
    """MoCo v2's 65,536, but never more keys than training images: a longer queue holds stale copies of
    the positive as negatives (facebookresearch/moco issue 146)."""
    return min(QUEUE_SIZE, num_train) if num_train else QUEUE_SIZE


class MoCo(MoCoHparams, PretrainModule):
    def __init__(self, temperature: float = TEMPERATURE, queue_size: int | None = None,
                 key_momentum: float = KEY_MOMENTUM, bn_splits: int = BN_SPLITS, symmetric: bool = SYMMETRIC,
                 projection_dim: int = PROJECTION_DIM, **base):
        super().__init__(**base)
        feature_dim = self.encoder.feature_dim
        self.projector = ProjectionHead(feature_dim, feature_dim, projection_dim)
        use_split_batch_norm(self.encoder, bn_splits)  # one device; on several, setup() makes it plain batch norm
        self.key_encoder, self.key_projector = momentum_copy(self.encoder), momentum_copy(self.projector)
        self.hparams.queue_size = queue_size or default_queue_size(self.hparams.num_train)
        self.queue = KeyQueue(self.hparams.queue_size, projection_dim)

    def setup(self, stage: str) -> None:
        if distributed.world_size() > 1:  # shuffle-BN across the devices instead of split batch norm
            use_split_batch_norm(self.encoder, 1)
            use_split_batch_norm(self.key_encoder, 1)

    def on_encoder_loaded(self) -> None:
        self.key_encoder.load_state_dict(self.encoder.state_dict())

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(views))  # queries (M, projection_dim)

    @torch.no_grad()
    def keys(self, views: torch.Tensor, split: str) -> torch.Tensor:
        """Keys of `views` from the momentum networks, computed on a shuffled batch (shuffle-BN)."""
        if distributed.world_size() > 1:
            return self._keys_across_devices(views, split)
        order = torch.randperm(len(views), generator=self.generator(split), device=views.device)
        keys = torch.empty(len(views), self.queue.keys.shape[1], device=views.device)
        keys[order] = self.key_projector(self.key_encoder(views[order])).float()
        return keys

    def _keys_across_devices(self, views: torch.Tensor, split: str) -> torch.Tensor:
        """MoCo's shuffle-BN: all devices' views shuffled together, each device encodes one shard."""
        world, rank = distributed.world_size(), distributed.rank()
        everything = distributed.gather(views, grads=False)  # (W * m, C, H, W)
        order = torch.randperm(len(everything), generator=self.generator(split), device=views.device)
        distributed.broadcast(order, src=0)  # every device uses rank 0's permutation
        shard = order.view(world, -1)[rank]
        encoded = distributed.gather(self.key_projector(self.key_encoder(everything[shard])).float(), grads=False)
        keys = torch.empty_like(encoded)
        keys[order] = encoded
        return keys.view(world, len(views), -1)[rank]

    def step(self, views: torch.Tensor, split: str):
        n = len(views) // 2
        if split == "train":  # the key networks follow the query networks before this step's keys (MoCo)
            ema_update(((self.encoder, self.key_encoder), (self.projector, self.key_projector)),
                       self.hparams.key_momentum)
        if self.hparams.symmetric:  # queries of both views; the positive of view 1's query is view 2's key
            queries, keys = self(views), self.keys(views, split).roll(n, dims=0)
        else:
            queries, keys = self(views[:n]), self.keys(views[n:], split)
        loss, rank = info_nce(queries, keys, self.queue.keys.clone(), self.hparams.temperature)
        if split == "train":
            self.queue.enqueue(self.gather(keys, grads=False))  # every device's keys, in rank order
        return loss, rank_metrics(rank)
