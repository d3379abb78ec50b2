"""Data-parallel helpers: which rank am I, average gradients, share tensors.

Training calls several model methods (text features, fused text, the two-stem
image pass), not one ``forward``, so instead of wrapping the model in
``DistributedDataParallel`` the loop all-reduces the gradients itself, in one
flat buffer per step. Without an initialised process group every helper is a
no-op, so the same loop runs on one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def current_world() -> World:
    """The process group this process belongs to (a world of one without ``torch.distributed``)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return World()


def init_from_environment(device: str | None = None) -> World:
    """Join the process group described by ``torchrun``'s environment (RANK, WORLD_SIZE, ...).

    Uses NCCL when training on CUDA and gloo otherwise. Without those variables
    this is a world of one and nothing is initialised.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2:
        return World()
    if not dist.is_initialized():
        cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return current_world()


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
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
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


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
