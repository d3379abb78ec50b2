"""The result of a search: top-k gallery rows per query, and the merge of ranked lists that
chunked and sharded searches share (so their tie order is one rule). Written without a torch
import: the numpy search's results are ``Matches`` of numpy arrays."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from csdn.retrieval.checks import is_tensor

if TYPE_CHECKING:
    import torch

__all__ = ["Matches", "merge_ranked"]


@dataclass(frozen=True)
class Matches:
    """Top-k gallery matches per query, best first.

    ``indices[q, j]`` is the gallery row of the j-th best match of query ``q`` and
    ``scores[q, j]`` its cosine similarity. Equal scores are ordered by smaller
    gallery index (exact backend). Torch tensors where torch is installed; numpy arrays
    (int64 and float32) from the numpy search where it is not.
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
        return [list(zip(i.tolist(), s.tolist())) for i, s in zip(_host(self.indices), _host(self.scores))]


def _host(values: Any) -> Any:
    return values.cpu() if is_tensor(values) else values


def merge_ranked(scores: list[Any], indices: list[Any], k: int) -> tuple[Any, Any]:
    """The best ``k`` of ranked lists ``[Q, n_i]`` given in gallery order (every index of list
    ``i`` below every index of list ``i + 1``, equal scores within a list in index order): a
    stable sort on score alone then breaks ties by gallery index. Torch tensors or numpy arrays."""
    if isinstance(scores[0], np.ndarray):
        scores_np, indices_np = np.concatenate(scores, axis=1), np.concatenate(indices, axis=1)
        ranked = np.argsort(-scores_np, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores_np, ranked, 1), np.take_along_axis(indices_np, ranked, 1)
    import torch

    scores_all = torch.cat(scores, dim=1)
    indices_all = torch.cat(indices, dim=1)
    order = torch.sort(scores_all, dim=1, descending=True, stable=True).indices[:, :k]
    return scores_all.gather(1, order), indices_all.gather(1, order)
