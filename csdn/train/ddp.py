"""Data-parallel helpers: which rank am I, average gradients, share tensors.

Training calls several model methods (text features, fused text, the two-stem
image pass), not one ``forward``, so instead of wrapping the model in
``DistributedDataParallel`` the loop all-reduces the gradients itself, in one
flat buffer per step. Without an initialised process group every helper is a
no-op, so the same loop runs on one process. Joining the world and knowing one's rank
live in :mod:`csdn.system.distributed` (shared with sharded embedding and matching).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from csdn.system.distributed import World, barrier, current_world, init_from_environment, shutdown

__all__ = [
    "World",
    "average_gradients",
    "barrier",
    "broadcast_state",
    "current_world",
    "init_from_environment",
    "mean_across_ranks",
    "shutdown",
    "sum_across_ranks",
]


def average_gradients(parameters: Iterable[nn.Parameter], world: World) -> None:
    """Replace each gradient by its mean over all ranks (one all-reduce of a flat buffer)."""
    if not world.active:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def sum_across_ranks(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Element-wise sum over ranks (used to assemble row shards filled with zeros elsewhere)."""
    if world.active:
        dist.all_reduce(tensor)
    return tensor


def mean_across_ranks(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Element-wise mean over ranks (logged losses are the global batch's, and agree on every rank)."""
    if world.active:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        tensor /= world.size
    return tensor


def broadcast_state(module: nn.Module, world: World, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters and buffers to every rank.

    Parameters stay identical by construction (same start, averaged gradients);
    BatchNorm running statistics follow each rank's own batches, so they are
    re-synchronised before every checkpoint.
    """
    if not world.active:
        return
    tensors = list(module.buffers()) + ([] if buffers_only else list(module.parameters()))
    for tensor in tensors:
        dist.broadcast(tensor.data, src=0)
