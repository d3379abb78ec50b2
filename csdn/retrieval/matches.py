"""The result of a search: top-k gallery rows per query, and the merge of ranked lists that
chunked and sharded searches share (so their tie order is one rule)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["Matches", "merge_ranked"]


@dataclass(frozen=True)
class Matches:
    """Top-k gallery matches per query, best first.

    ``indices[q, j]`` is the gallery row of the j-th best match of query ``q`` and
    ``scores[q, j]`` its cosine similarity. Equal scores are ordered by smaller
    gallery index (exact backend).
    """

    indices: torch.Tensor  # [Q, k] int64
    scores: torch.Tensor  # [Q, k] float32

    def __len__(self) -> int:
        return self.indices.shape[0]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(indices, scores)`` of one query at a time."""
        return zip(self.indices, self.scores)

    def to_list(self) -> list[list[tuple[int, float]]]:
        """Plain Python ``[[(gallery_index, score), ...], ...]``, one list per query."""
        return [list(zip(i.tolist(), s.tolist())) for i, s in zip(self.indices.cpu(), self.scores.cpu())]


def merge_ranked(scores: list[torch.Tensor], indices: list[torch.Tensor], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The best ``k`` of ranked lists ``[Q, n_i]`` given in gallery order (every index of list
    ``i`` below every index of list ``i + 1``, equal scores within a list in index order): a
    stable sort on score alone then breaks ties by gallery index."""
    scores_all = torch.cat(scores, dim=1)
    indices_all = torch.cat(indices, dim=1)
    order = torch.sort(scores_all, dim=1, descending=True, stable=True).indices[:, :k]
    return scores_all.gather(1, order), indices_all.gather(1, order)
