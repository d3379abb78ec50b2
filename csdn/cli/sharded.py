"""``csdn embed`` / ``csdn match`` under ``torchrun``: the work split across ranks, the output written by rank 0.

    torchrun --nproc-per-node 4 -m csdn embed imgs/ --model sysu --modality ir --output e.npy
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint host0:29500 \\
        -m csdn match q.npy g.npy --output ranking.csv

Outside torchrun both commands run in one process, as always. See :mod:`csdn.system.distributed` for
how failures and differing inputs are reported on every rank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from csdn.images.files import expand_folders
from csdn.retrieval.embeddings import Embeddings
from csdn.system.distributed import (
    World,
    check_same,
    fingerprint,
    init_from_environment,
    run_share,
    shard_bounds,
    shutdown,
)

__all__ = ["torchrun_world", "embed_on_ranks"]


@contextmanager
def torchrun_world(device: str | None) -> Iterator[World]:
    """The torchrun world this process belongs to (joined here, left on exit); a world of one outside torchrun."""
    world = init_from_environment(device)
    try:
        yield world
    finally:
        if world.active:
            shutdown()


def embed_on_ranks(
    embed: Callable[[Sequence[str]], Embeddings], inputs: Sequence[str], world: World
) -> Embeddings | None:
    """``embed(inputs)`` (images and folders in, :class:`Embeddings` out) with the image list split
    into contiguous shares, one per rank.

    Rank 0 returns every row, in input order (the rows and paths a single process gives); the
    other ranks return None. Every rank must list the same images (checked).
    """
    paths = [str(p) for p in expand_folders(inputs)]
    if not world.active or not paths:
        return embed(inputs)
    check_same(fingerprint(len(paths), "\n".join(paths)), "image lists", world)
    first, end = shard_bounds(len(paths), world)

    def share() -> Embeddings | None:
        if end == first:
            return None
        part = embed(paths[first:end])
        part.vectors = part.vectors.cpu()
        return part

    parts = run_share(world, share, f"images {first}-{end - 1} of {len(paths)}")
    if parts is None:
        return None
    head = parts[0]
    return Embeddings(
        torch.cat([p.vectors for p in parts]),
        [path for p in parts for path in p.paths],
        model=head.model,
        modality=head.modality,
        flip=head.flip,
        precision=head.precision,
    )
