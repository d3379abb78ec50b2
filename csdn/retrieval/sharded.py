"""Exact matching split across the ranks of a ``torchrun`` world.

Each rank ranks its own contiguous slice of the gallery (of a memory-mapped file it reads only that
slice and, to prove that the ranks read the same gallery, the next rank's slice), rank 0 gathers the per-slice top-k lists and merges them. Slices follow gallery
order and each list is already ordered by (score desc, index asc), so a stable sort of their
concatenation by score keeps equal scores in gallery order: the merged answer is the one
:func:`csdn.retrieval.exact.match_arrays` gives in one process.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.distributed as dist

from csdn.errors import DistributedError
from csdn.retrieval.exact import match_arrays
from csdn.retrieval.matches import Matches, merge_ranked
from csdn.retrieval.rows import ArrayLike
from csdn.system.distributed import World, check_same, current_world, fingerprint, run_share, shard_bounds

__all__ = ["match_on_ranks", "merge_shards", "share_digest"]

_HASH_BYTES = 64 * 2**20  # gallery bytes hashed at a time: a memory-mapped gallery stays mapped


def share_digest(gallery: ArrayLike, first: int, end: int) -> str:
    """SHA-256 of the stored bytes of ``gallery[first:end]``, read a block of rows at a time."""
    digest = hashlib.sha256()
    step = max(1, _HASH_BYTES // max(1, int(gallery[:1].nbytes)))
    for start in range(first, end, step):
        block = torch.as_tensor(gallery[start : min(end, start + step)]).detach().cpu().contiguous()
        digest.update(block.reshape(-1).view(torch.uint8).numpy().data)  # its bytes, bfloat16 included
    return digest.hexdigest()


def _check_shares(gallery: ArrayLike, world: World, name: str) -> None:
    """Every share of the gallery is hashed by its own rank and by the rank before it; all ranks compare.

    Each rank reads two shares, not the whole gallery, yet a row that differs anywhere (a stale copy
    of the file on one machine) is caught: the two ranks that hashed its share disagree.
    """
    count = gallery.shape[0]
    owned = [(world.rank + step) % world.size for step in (0, 1)]
    mine = {share: share_digest(gallery, *shard_bounds(count, World(share, world.size))) for share in owned}
    seen: list[Any] = [None] * world.size
    dist.all_gather_object(seen, mine)
    for share in range(world.size):
        checker = (share - 1) % world.size
        if seen[share][share] != seen[checker][share]:
            first, end = shard_bounds(count, World(share, world.size))
            raise DistributedError(
                f"the ranks of this torchrun world read different {name}: rank {share} and rank {checker} see "
                f"different rows in {first}-{end - 1} (rank {share}'s share; SHA-256 {seen[share][share][:12]} vs "
                f"{seen[checker][share][:12]}); give every rank the same file (a stale copy on one machine?)"
            )


def match_on_ranks(
    query: ArrayLike,
    gallery: ArrayLike,
    topk: int = 10,
    *,
    world: World | None = None,
    names: tuple[str, str] = ("query embeddings", "gallery embeddings"),
    **options: Any,
) -> Matches | None:
    """``match_arrays(query, gallery, topk, **options)`` with the gallery split across the ranks.

    Every rank must pass the same query and gallery, checked before any ranking: shapes and dtypes,
    the whole query, and every gallery share (hashed by its own rank and by the one before it). Every rank raises the same :class:`csdn.errors.DistributedError`, naming
    the ranks, the rows and ``names`` (what the query and gallery are, e.g. their files), if they
    differ or if any rank's share fails. Returns the merged ``Matches`` on rank 0 and None on the
    others. Outside a torchrun world this is plain ``match_arrays``.
    """
    world = world or current_world()
    if not world.active:
        return match_arrays(query, gallery, topk, **options)
    shape = (tuple(query.shape), tuple(gallery.shape), str(gallery.dtype))
    check_same(fingerprint(shape), f"shapes or dtypes of the {names[0]} and {names[1]}", world)
    check_same(fingerprint(torch.as_tensor(query)), names[0], world)
    _check_shares(gallery, world, names[1])
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
