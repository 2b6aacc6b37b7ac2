"""Collectives across the processes of a multi-device run (Lightning's DDP, torchrun, SLURM), as plain functions.

They read torch.distributed's own state, not a Trainer's, so a method's loss code and its tests run the same
with or without Lightning; with one process (or none initialised) each is the identity.
"""
from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn

# torch 2.10+ calls its differentiable all_gather deprecated in favour of a private module; it works unchanged
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
                        category=FutureWarning)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def gather(x: torch.Tensor, grads: bool = True) -> torch.Tensor:
    """(n, ...) on each process -> (W * n, ...), processes in rank order; every process must pass the same n.

    With `grads`, the backward pass sends each process the gradient that every process's loss puts on its rows
    (torch.distributed.nn's all_gather: a reduce-scatter of the gradients, summed). When every process computes
    the same loss on the gathered rows, each receives W times the single-process gradient of its rows, which DDP's
    averaging over the W processes turns back into exactly the gradient one process would get on the global batch.
    Without `grads` (keys, queues) the result is detached.
    """
    if world_size() == 1:
        return x
    if grads:
        return torch.cat(dist_nn.all_gather(x.contiguous()))
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts)


def broadcast(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    """`x` of process `src` on every process (in place)."""
    if world_size() > 1:
        dist.broadcast(x, src=src)
    return x
