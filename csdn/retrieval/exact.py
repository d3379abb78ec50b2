"""Exact top-k search of arrays by cosine similarity, chunk by chunk.

``match_arrays`` is exact and memory-bounded: the gallery is read chunk by chunk (a
``numpy.memmap`` on disk works, so a gallery larger than RAM can be searched)
and only a running top-k per query is kept, so no ``Q x G`` score matrix is
ever built. It is the engine under :func:`csdn.match`, which also accepts files and images.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from csdn.retrieval.checks import CHUNK_BYTES, check_dtypes, check_gallery, check_topk, is_half, positive_int
from csdn.retrieval.faiss_index import FaissIndex
from csdn.retrieval.matches import Matches, merge_ranked
from csdn.retrieval.prepared import PreparedGallery
from csdn.retrieval.rows import ArrayLike, gallery_chunks, prepare_queries
from csdn.retrieval.screening import ScratchBuffers, bf16_is_fast, candidates, rescored, screen_chunks, screen_slack

__all__ = ["BACKENDS", "SCREEN_MIN_QUERIES", "match_arrays"]

BACKENDS = ("exact", "faiss")
# Below this many queries a float32 product reads memory more than it computes, and
# narrowing a float32 gallery to bfloat16 for the screen would cost more than it saves.
SCREEN_MIN_QUERIES = 64

# float32 bytes of one query x gallery score block (see checks.CHUNK_BYTES)
_SCORE_BYTES = 64 * 2**20


def match_arrays(
    query: ArrayLike,
    gallery: ArrayLike | PreparedGallery,
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
    """Find the ``topk`` most cosine-similar gallery rows for every query row.

    Args:
        query: ``[Q, D]`` (or one vector ``[D]``, treated as ``Q = 1``; the result is
            still ``[1, k]``) torch tensor or numpy array of floats.
        gallery: ``[G, D]`` torch tensor or numpy array, float32 or half precision (float16,
            bfloat16: half the memory, same exact answer); a ``numpy.memmap`` (e.g.
            ``np.load(path, mmap_mode="r")``, or ``load_embeddings(...).vectors``) is read one
            chunk at a time; or a :class:`~csdn.retrieval.prepared.PreparedGallery`, whose screen
            copy and norms were computed once for many searches (its own ``chunk_size`` holds).
        topk: matches per query; more than ``G`` returns all ``G``.
        backend: ``"exact"`` (default) or ``"faiss"`` (approximate, see ``FaissIndex``;
            it builds an index for this one call, so build a ``FaissIndex`` yourself to
            search the same gallery many times).
        chunk_size: gallery rows per chunk (exact backend); default: 128 MiB of float32 rows.
        query_chunk_size: query rows per score block (exact backend); default: a
            ``query_chunk_size x chunk_size`` float32 block of 64 MiB.
        progress: show a tqdm bar over the gallery.
        faiss_options: keyword arguments for ``FaissIndex`` (faiss backend only).
        screen: exact backend only: rule rows out with a bfloat16 product first and re-score the
            rest in float32 (:mod:`csdn.retrieval.screening`; same answer, 2-3x faster where
            bfloat16 units exist). Default: on where they exist, for half-precision and prepared
            galleries and for batches of ``SCREEN_MIN_QUERIES`` or more queries.
        first_row: the gallery row number of ``gallery[0]`` when it is a slice of a larger gallery
            (exact backend): result indices and error messages count from it.

    Returns:
        ``Matches`` with ``indices`` ``[Q, k]`` int64 and ``scores`` ``[Q, k]`` float32,
        ``k = min(topk, G)``, on the query's device (CPU for numpy input).

    Scores are cosine similarities: rows are scaled to unit L2 norm here, so inputs
    need not be normalised. Rows already of unit norm (within ``UNIT_NORM_TOLERANCE``,
    as ``embed_image`` output is) are used as they are: their scores are plain inner
    products. Work is done in float32; rows of extreme scale (a norm below 1e-12 or
    above 1e12, e.g. float64 rows of 1e300) are first divided by their largest absolute
    value in their own precision, so they neither underflow nor overflow. Rows holding
    NaN/inf or all zeros are refused, naming the row. Exactly equal scores are ranked by smaller
    gallery index, whatever the chunk sizes. Queries are held in memory as float32;
    only the gallery is streamed.

    Half-precision galleries give exactly the top-k that float32 arithmetic on their stored
    values (upcast) gives. Queries are full precision (float32/float64) or of the gallery's
    own dtype; a half-precision query against a gallery of another dtype is refused.

    Working memory (beyond the queries and the result) is bounded by the chunks, whatever the
    gallery size: one gallery chunk (``chunk_size`` rows, by default 128 MiB as float32; a view
    of in-memory rows where their dtype allows), its bfloat16 copy for the screen, and one
    ``query_chunk_size x chunk_size`` score block (64 MiB) with its bfloat16 and boolean twins:
    about 300 MiB with the defaults.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(map(repr, BACKENDS))}")
    k = check_topk(topk)
    queries = prepare_queries(query)
    prepared = gallery if isinstance(gallery, PreparedGallery) else None
    if prepared is not None and chunk_size is not None and chunk_size != prepared.chunk_size:
        raise ValueError(
            f"chunk_size={chunk_size} differs from the prepared gallery's {prepared.chunk_size}; "
            "pass chunk_size to PreparedGallery instead"
        )
    rows: ArrayLike = gallery.rows if isinstance(gallery, PreparedGallery) else gallery
    num_rows, dim = check_gallery(rows, queries.shape[1])
    check_dtypes(query, rows)
    if backend == "faiss":
        if chunk_size is not None or query_chunk_size is not None or screen is not None or first_row:
            raise ValueError(
                "chunk_size/query_chunk_size/screen/first_row apply to the exact backend; use faiss_options for faiss"
            )
        options = dict(faiss_options or {})
        options.setdefault("progress", progress)
        return FaissIndex(rows, **options).search(queries, k)
    if faiss_options:
        raise ValueError('faiss_options only apply with backend="faiss"')

    k = min(k, num_rows)
    num_queries = queries.shape[0]
    if prepared is not None:
        chunk = prepared.chunk_size
    else:
        chunk = positive_int(chunk_size, "chunk_size") or max(1, CHUNK_BYTES // (4 * dim))
    query_chunk = positive_int(query_chunk_size, "query_chunk_size") or max(1, _SCORE_BYTES // (4 * chunk))

    device = queries.device
    if num_queries == 0:
        return Matches(torch.empty(0, k, dtype=torch.int64, device=device), torch.empty(0, k, device=device))
    if screen is None:
        screen = bf16_is_fast(device) and (prepared is not None or is_half(rows) or num_queries >= SCREEN_MIN_QUERIES)
    best_scores = torch.empty(num_queries, 0, device=device)
    best_indices = torch.empty(num_queries, 0, dtype=torch.int64, device=device)
    narrow_queries = queries.bfloat16() if screen else queries
    slacks: dict[torch.dtype, tuple[torch.Tensor, float]] = {}
    buffers = ScratchBuffers()  # fresh multi-MiB tensors per chunk would cost page faults: reuse them
    if not screen:
        chunks = gallery_chunks(rows, chunk, progress, "match", first_row)
    elif prepared is not None:
        chunks = prepared.chunks(progress, "match", first_row)
    else:
        chunks = screen_chunks(rows, chunk, progress, "match", first_row, buffers)
    with torch.no_grad():
        for start, stored, narrow, norms in chunks:
            stored, norms = stored.to(device), norms.to(device)
            if screen:
                narrow = narrow.to(device)
                if stored.dtype not in slacks:
                    slacks[stored.dtype] = screen_slack(queries, stored.dtype)
                slack, relative = slacks[stored.dtype]
            unit = bool(torch.all(norms == 1))
            parts = []
            for first in range(0, num_queries, query_chunk):
                span = slice(first, first + query_chunk)
                span_len = min(query_chunk, num_queries - first)
                if screen:
                    kth = (
                        best_scores[span, k - 1]
                        if best_scores.shape[1] == k
                        else torch.full_like(slack[span], -math.inf)
                    )
                    shape = (span_len, len(norms))
                    product = torch.mm(
                        narrow_queries[span], narrow.T, out=buffers.get("product", shape, torch.bfloat16, device)
                    )
                    screened = torch.div(product, norms, out=buffers.get("screened", shape, torch.float32, device))
                    pairs = candidates(screened, kth, slack[span], relative, k, buffers)
                    cand_scores, cand_indices = rescored(queries[span], stored, pairs, buffers)
                else:
                    scores = queries[span] @ stored.T
                    if not unit:
                        scores /= norms
                    cand_scores, cand_indices = _chunk_topk(scores, k)
                parts.append(_merge(best_scores[span], best_indices[span], cand_scores, cand_indices + start, k))
            best_scores = torch.cat([part[0] for part in parts])
            best_indices = torch.cat([part[1] for part in parts])
    return Matches(indices=best_indices, scores=best_scores)


def _chunk_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best columns of each row under (score desc, column asc), ordered by column.

    ``torch.topk`` picks arbitrarily among values tied with the k-th best. Asking it
    for one more shows where that matters (the extra value equals the k-th) without
    another pass over ``scores``; those rows are redone with a stable sort.
    """
    rows, width = scores.shape
    if width <= k:
        return scores, torch.arange(width, device=scores.device).expand(rows, width)
    values, indices = torch.topk(scores, k + 1, dim=1)
    ambiguous = values[:, k] == values[:, k - 1]
    values, indices = values[:, :k], indices[:, :k]
    if ambiguous.any():
        redo = ambiguous.nonzero().squeeze(1)
        order = torch.sort(scores[redo], dim=1, descending=True, stable=True).indices[:, :k]
        indices[redo] = order
        values[redo] = scores[redo].gather(1, order)
    indices, perm = indices.sort(dim=1)
    return values.gather(1, perm), indices


def _merge(
    best_scores: torch.Tensor,
    best_indices: torch.Tensor,
    cand_scores: torch.Tensor,
    cand_indices: torch.Tensor,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge a running top-k with a later chunk's candidates, best first (see :func:`merge_ranked`)."""
    return merge_ranked([best_scores, cand_scores], [best_indices, cand_indices], k)
