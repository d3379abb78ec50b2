"""Which rank am I, and the few collective steps that sharded work needs (torch.distributed).

``torchrun`` starts the processes and describes the world in environment variables (RANK,
WORLD_SIZE, MASTER_ADDR, ...); across machines its rendezvous does the rest, so nothing here
knows about hosts. Without an initialised process group every helper acts on a world of one,
so the same code runs in one process. Used by training (gradients) and by ``csdn embed`` /
``csdn match`` (rows split across ranks, results gathered on rank 0).

Sharded steps follow one rule that keeps a failure from hanging the others: every rank runs
its share inside ``try``, then all ranks meet in :func:`settle`, which raises the same
:class:`csdn.errors.DistributedError` on every rank when any of them failed, naming it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from csdn.errors import DistributedError

__all__ = [
    "World",
    "current_world",
    "init_from_environment",
    "barrier",
    "shutdown",
    "shard_bounds",
    "check_same",
    "settle",
    "gather_to_main",
    "fingerprint",
]


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

    Uses NCCL when working on CUDA and gloo otherwise. Without those variables
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


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(count: int, world: World) -> tuple[int, int]:
    """``[first, end)`` of this rank's contiguous share of ``count`` items (rank order = item order)."""
    return count * world.rank // world.size, count * (world.rank + 1) // world.size


def fingerprint(*parts: Any) -> str:
    """A short hash of strings, numbers and tensors: what ranks compare to prove they see the same input."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            tensor = part.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{list(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _all_gather(value: Any, world: World) -> list[Any]:
    values: list[Any] = [None] * world.size
    dist.all_gather_object(values, value)
    return values


def check_same(value: str, what: str, world: World) -> None:
    """Raise on every rank unless every rank holds the same ``value`` (e.g. a :func:`fingerprint` of ``what``)."""
    if not world.active:
        return
    values = _all_gather(value, world)
    odd = [rank for rank, seen in enumerate(values) if seen != values[0]]
    if odd:
        raise DistributedError(
            f"the ranks of this torchrun world see different {what}: rank(s) {', '.join(map(str, odd))} differ "
            f"from rank 0; give every rank the same inputs (same files, same working directory, same options)"
        )


def settle(world: World, error: BaseException | None, where: str = "") -> None:
    """Meet the other ranks after a share of work; if any rank failed, raise on all of them, naming it.

    ``error`` is this rank's failure (None if its share succeeded); ``where`` says what the share
    was (e.g. ``"images 100-199"``) for the message.
    """
    if not world.active:
        if error is not None:
            raise error
        return
    mine = None if error is None else f"{where + ': ' if where else ''}{error}"
    failures = [(rank, message) for rank, message in enumerate(_all_gather(mine, world)) if message is not None]
    if failures:
        rank, message = failures[0]
        others = f" (and rank(s) {', '.join(str(r) for r, _ in failures[1:])})" if len(failures) > 1 else ""
        raise DistributedError(f"rank {rank} of {world.size} failed{others}: {message}") from error


def gather_to_main(value: Any, world: World) -> list[Any] | None:
    """Every rank's ``value`` in rank order on rank 0; None on the other ranks."""
    if not world.active:
        return [value]
    values: list[Any] | None = [None] * world.size if world.is_main else None
    dist.gather_object(value, values, dst=0)
    return values


def run_share(world: World, work: Callable[[], Any], where: str) -> list[Any] | None:
    """``work()`` for this rank's share, then every share's result, in rank order, on rank 0 (None elsewhere).

    A failing share does not leave the others waiting: every rank meets in :func:`settle`, and
    all raise the same :class:`DistributedError` naming the rank and ``where``. Shares that
    returned None (empty ones) are left out of the list.
    """
    part, error = None, None
    try:
        part = work()
    except Exception as failure:  # every rank must reach settle(), or the others would wait forever
        error = failure
    settle(world, error, where)
    parts = gather_to_main(part, world)
    return None if parts is None else [p for p in parts if p is not None]
