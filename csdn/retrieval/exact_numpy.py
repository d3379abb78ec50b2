"""Exact top-k search in numpy, for where torch is not installed (next to :mod:`csdn.runtime`).

The same search as :func:`csdn.retrieval.exact.match_arrays` without its bfloat16 screen: float32
cosine scores chunk by chunk, a running top-k per query, rows checked, rescaled and refused by the
rules of :mod:`csdn.retrieval.checks`, and exactly equal scores ranked by smaller gallery index
whatever the chunk sizes. The scores come from numpy's matrix product rather than torch's, so
they agree with the torch path's to float32 rounding (about 1e-7), not bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tqdm.auto import tqdm

from csdn.retrieval.checks import (
    CHUNK_BYTES,
    SAFE_NORM_RANGE,
    UNIT_NORM_TOLERANCE,
    bad_row_error,
    check_array,
    check_dtypes,
    check_gallery,
    check_topk,
    positive_int,
    rescale_rows,
)
from csdn.retrieval.matches import Matches, merge_ranked

__all__ = ["match_arrays_numpy", "numpy_rows"]

_SCORE_BYTES = 64 * 2**20  # float32 bytes of one query x gallery score block, as the torch path


def numpy_rows(block: np.ndarray, name: str, first_row: int) -> tuple[np.ndarray, np.ndarray]:
    """``block`` as float32 rows with their L2 norms (exactly 1 for unit rows); rows of extreme scale
    are rescaled first, rows holding NaN/inf or all zeros refused (``first_row`` numbers them)."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        rows = np.ascontiguousarray(block, dtype=np.float32)
        norms = np.linalg.norm(rows, axis=1)
    low, high = SAFE_NORM_RANGE
    unsafe = ~((norms >= low) & (norms <= high))
    if unsafe.any():
        picked = np.flatnonzero(unsafe)
        scaled, finite, nonzero = rescale_rows(np.asarray(block[picked]))
        bad = ~(finite & nonzero)
        if bad.any():
            first = int(np.argmax(bad))
            raise bad_row_error(name, first_row + int(picked[first]), bool(finite[first]))
        rows = rows.copy() if np.may_share_memory(rows, block) else rows  # never write into the caller's array
        rows[picked] = scaled
        norms = norms.copy()
        norms[picked] = np.linalg.norm(scaled, axis=1)
    return rows, np.where(np.abs(norms - 1) <= UNIT_NORM_TOLERANCE, np.float32(1), norms).astype(np.float32)


def match_arrays_numpy(
    query: np.ndarray,
    gallery: np.ndarray,
    topk: int = 10,
    *,
    backend: str = "exact",
    chunk_size: int | None = None,
    query_chunk_size: int | None = None,
    progress: bool = False,
    faiss_options: dict[str, Any] | None = None,
    screen: bool | None = None,
    first_row: int = 0,
) -> Matches:
    """:func:`csdn.retrieval.exact.match_arrays` on numpy arrays, returning numpy ``Matches``.

    ``screen`` is accepted for the torch path's sake and changes nothing (the screen only makes
    the same answer faster); ``backend="faiss"`` needs the torch side of the package.
    """
    if backend != "exact" or faiss_options:
        raise ValueError(
            f"without PyTorch only the exact backend runs (got backend={backend!r}"
            + (", faiss_options" if faiss_options else "")
            + "); install torch for the faiss backend"
        )
    k = check_topk(topk)
    check_array(query, "query", (1, 2))
    queries = query[None] if query.ndim == 1 else query
    if queries.shape[1] == 0:
        raise ValueError("query rows have 0 dimensions")
    num_gallery, dim = check_gallery(gallery, queries.shape[1])
    check_dtypes(query, gallery)
    rows, norms = numpy_rows(queries, "query", 0)
    queries = rows / norms[:, None]
    k = min(k, num_gallery)
    chunk = positive_int(chunk_size, "chunk_size") or max(1, CHUNK_BYTES // (4 * dim))
    query_chunk = positive_int(query_chunk_size, "query_chunk_size") or max(1, _SCORE_BYTES // (4 * chunk))
    best_scores = np.empty((len(queries), 0), np.float32)
    best_indices = np.empty((len(queries), 0), np.int64)
    if len(queries) == 0:
        return Matches(np.empty((0, k), np.int64), np.empty((0, k), np.float32))  # type: ignore[arg-type]
    with tqdm(total=num_gallery, disable=not progress, desc="match", unit="row") as bar:
        for start in range(0, num_gallery, chunk):
            stored, chunk_norms = numpy_rows(gallery[start : start + chunk], "gallery", first_row + start)
            unit = bool(np.all(chunk_norms == 1))
            parts = []
            for first in range(0, len(queries), query_chunk):
                scores = queries[first : first + query_chunk] @ stored.T
                if not unit:
                    scores /= chunk_norms
                cand_scores, cand_indices = _chunk_topk(scores, k)
                span = slice(first, first + query_chunk)
                parts.append(
                    merge_ranked(
                        [best_scores[span], cand_scores], [best_indices[span], cand_indices + first_row + start], k
                    )
                )
            best_scores = np.concatenate([part[0] for part in parts])
            best_indices = np.concatenate([part[1] for part in parts])
            bar.update(len(stored))
    return Matches(indices=best_indices, scores=best_scores)  # type: ignore[arg-type]


def _chunk_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row under (score desc, column asc), ordered by column: every
    column reaching the row's k-th best value is a candidate (so ties are all seen), and a sort by
    (row, score desc, column) keeps each row's first ``k``."""
    rows, width = scores.shape
    if width <= k:
        return scores, np.broadcast_to(np.arange(width, dtype=np.int64), (rows, width))
    kth = np.partition(scores, width - k, axis=1)[:, width - k]
    row_of, column = np.nonzero(scores >= kth[:, None])
    values = scores[row_of, column]
    order = np.lexsort((column, -values, row_of))
    counts = np.bincount(row_of, minlength=rows)
    rank = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = order[rank < k]
    picked_columns = column[keep].reshape(rows, k)
    picked_columns.sort(axis=1)
    return np.take_along_axis(scores, picked_columns, 1), picked_columns
