"""Exact matching split across the ranks of a ``torchrun`` world.

Each rank ranks its own contiguous slice of the gallery (a memory-mapped file is read only
there), rank 0 gathers the per-slice top-k lists and merges them. Slices follow gallery
order and each list is already ordered by (score desc, index asc), so a stable sort of their
concatenation by score keeps equal scores in gallery order: the merged answer is the one
:func:`csdn.retrieval.exact.match_arrays` gives in one process.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from csdn.retrieval.exact import match_arrays
from csdn.retrieval.matches import Matches, merge_ranked
from csdn.retrieval.rows import ArrayLike
from csdn.system.distributed import World, check_same, current_world, fingerprint, run_share, shard_bounds

__all__ = ["match_on_ranks", "merge_shards"]

_SAMPLE_ROWS = 8  # gallery rows at each end that every rank hashes to prove it reads the same gallery


def _gallery_sample(gallery: ArrayLike) -> torch.Tensor:
    ends = [gallery[:_SAMPLE_ROWS], gallery[-_SAMPLE_ROWS:]]
    return torch.cat([torch.as_tensor(part).reshape(len(part), -1) for part in ends])


def match_on_ranks(
    query: ArrayLike, gallery: ArrayLike, topk: int = 10, *, world: World | None = None, **options: Any
) -> Matches | None:
    """``match_arrays(query, gallery, topk, **options)`` with the gallery split across the ranks.

    Every rank must pass the same query and gallery (checked: shapes, dtypes, the query and the
    gallery's first and last rows); every rank raises the same
    :class:`csdn.errors.DistributedError` if they differ or if any rank's share fails. Returns
    the merged ``Matches`` on rank 0 and None on the others. Outside a torchrun world this is
    plain ``match_arrays``.
    """
    world = world or current_world()
    if not world.active:
        return match_arrays(query, gallery, topk, **options)
    shape = (tuple(query.shape), tuple(gallery.shape), str(gallery.dtype))
    check_same(
        fingerprint(shape, torch.as_tensor(query), _gallery_sample(gallery)), "query and gallery embeddings", world
    )
    first, end = shard_bounds(gallery.shape[0], world)

    def share() -> tuple[torch.Tensor, torch.Tensor] | None:
        if end == first:
            return None
        rows = query
        if dist.get_backend() == "nccl" and isinstance(query, torch.Tensor):
            rows = query.to(torch.device("cuda", torch.cuda.current_device()))
        found = match_arrays(rows, gallery[first:end], topk, first_row=first, **options)
        return found.indices.cpu(), found.scores.cpu()

    parts = run_share(world, share, f"gallery rows {first}-{end - 1}")
    return None if parts is None else merge_shards(parts, topk)


def merge_shards(parts: list[tuple[torch.Tensor, torch.Tensor]], topk: int) -> Matches:
    """One top-k from per-slice ``(indices, scores)`` lists given in gallery order."""
    scores, indices = merge_ranked([p[1] for p in parts], [p[0] for p in parts], topk)
    return Matches(indices=indices, scores=scores)
