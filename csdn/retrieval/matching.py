"""Rank a gallery of embeddings for each query by cosine similarity.

``match`` is exact and memory-bounded: the gallery is read chunk by chunk (a
``numpy.memmap`` on disk works, so a gallery larger than RAM can be searched)
and only a running top-k per query is kept, so no ``Q x G`` score matrix is
ever built. ``FaissIndex`` (optional extra ``csdn-reid[faiss]``) trades exactness
for low latency on small query batches against a gallery that is searched many times.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from csdn.retrieval.screening import bf16_is_fast, candidates, screen_slack

__all__ = ["ArrayLike", "FaissIndex", "Matches", "UNIT_NORM_TOLERANCE", "match", "merge_ranked"]

ArrayLike = Union[torch.Tensor, np.ndarray]

BACKENDS = ("exact", "faiss")
FAISS_METHODS = ("ivf", "hnsw")
HALF_DTYPES = (torch.float16, torch.bfloat16)
# Below this many queries a float32 product reads memory more than it computes, and
# narrowing a float32 gallery to bfloat16 for the screen would cost more than it saves.
SCREEN_MIN_QUERIES = 64

# Sizes chosen automatically: float32 bytes of one gallery chunk and of one query x
# gallery score block. Small enough to bound memory (a float32 chunk of a tensor or
# memmap is a view, not a copy), large enough that few, large operations run per chunk.
_CHUNK_BYTES = 128 * 2**20
_SCORE_BYTES = 64 * 2**20
# Rows whose L2 norm is this close to 1 count as unit rows and are used as they are:
# float32 normalisation leaves norms within ~5e-7 of 1 at D=6144, and a relative error of
# this size is below the rounding of a float32 dot product over thousands of terms.
UNIT_NORM_TOLERANCE = 2e-6


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


def match(
    query: ArrayLike,
    gallery: ArrayLike,
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
            chunk at a time.
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
            bfloat16 units exist). Default: on where they exist, for half-precision galleries
            and for batches of ``SCREEN_MIN_QUERIES`` or more queries.
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
    k = _check_topk(topk)
    queries = _prepare_queries(query)
    num_gallery, dim = _check_gallery(gallery, queries.shape[1])
    _check_dtypes(query, gallery)
    if backend == "faiss":
        if chunk_size is not None or query_chunk_size is not None or screen is not None or first_row:
            raise ValueError("chunk_size/query_chunk_size/screen/first_row apply to the exact backend; "
                             "use faiss_options for faiss")
        options = dict(faiss_options or {})
        options.setdefault("progress", progress)
        return FaissIndex(gallery, **options).search(queries, k)
    if faiss_options:
        raise ValueError('faiss_options only apply with backend="faiss"')

    k = min(k, num_gallery)
    num_queries = queries.shape[0]
    chunk = _positive_int(chunk_size, "chunk_size") or max(1, _CHUNK_BYTES // (4 * dim))
    query_chunk = _positive_int(query_chunk_size, "query_chunk_size") or max(1, _SCORE_BYTES // (4 * chunk))

    device = queries.device
    if num_queries == 0:
        return Matches(torch.empty(0, k, dtype=torch.int64, device=device), torch.empty(0, k, device=device))
    if screen is None:
        screen = bf16_is_fast(device) and (_is_half(gallery) or num_queries >= SCREEN_MIN_QUERIES)
    best_scores = torch.empty(num_queries, 0, device=device)
    best_indices = torch.empty(num_queries, 0, dtype=torch.int64, device=device)
    narrow_queries = queries.bfloat16() if screen else None
    slacks: dict[torch.dtype, tuple[torch.Tensor, float]] = {}
    buffers = _Buffers()  # fresh multi-MiB tensors per chunk would cost page faults: reuse them
    chunks = (_screen_chunks(gallery, chunk, progress, "match", first_row, buffers) if screen
              else _gallery_chunks(gallery, chunk, progress, "match", first_row))
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
                    kth = best_scores[span, k - 1] if best_scores.shape[1] == k else torch.full_like(slack[span], -math.inf)
                    shape = (span_len, len(norms))
                    product = torch.mm(narrow_queries[span], narrow.T, out=buffers.get("product", shape, torch.bfloat16, device))
                    screened = torch.div(product, norms, out=buffers.get("screened", shape, torch.float32, device))
                    pairs = candidates(screened, kth, slack[span], relative, k)
                    cand_scores, cand_indices = _rescored(queries[span], stored, pairs)
                else:
                    scores = queries[span] @ stored.T
                    if not unit:
                        scores /= norms
                    cand_scores, cand_indices = _chunk_topk(scores, k)
                parts.append(_merge(best_scores[span], best_indices[span], cand_scores, cand_indices + start, k))
            best_scores = torch.cat([part[0] for part in parts])
            best_indices = torch.cat([part[1] for part in parts])
    return Matches(indices=best_indices, scores=best_scores)


def _rescored(queries: torch.Tensor, rows: torch.Tensor, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 cosines of (query, row) ``pairs`` ``[M, 2]`` of a chunk (row-major), per query in column order,
    padded with ``-inf`` (which never outranks a real score) to the longest list; with the columns.

    Each pair is scored by the same batched dot product and each row's norm is computed on its
    own, so a pair's score does not depend on its chunk or on the other candidates: identical
    rows tie exactly, as the documented tie order needs.
    """
    picked = rows[pairs[:, 1]].to(torch.float32)
    norms = torch.linalg.vector_norm(picked, dim=1)
    norms = torch.where((norms - 1).abs() <= UNIT_NORM_TOLERANCE, 1.0, norms)
    scores = torch.einsum("md,md->m", picked, queries[pairs[:, 0]]) / norms
    counts = torch.bincount(pairs[:, 0], minlength=len(queries))
    width = max(1, int(counts.max()))
    slot = torch.arange(len(pairs), device=pairs.device) - (torch.cumsum(counts, 0) - counts)[pairs[:, 0]]
    cand_scores = torch.full((len(queries), width), -math.inf, device=queries.device)
    cand_indices = torch.full((len(queries), width), -1, dtype=torch.int64, device=queries.device)
    cand_scores[pairs[:, 0], slot] = scores
    cand_indices[pairs[:, 0], slot] = pairs[:, 1]
    return cand_scores, cand_indices


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


def merge_ranked(
    scores: list[torch.Tensor], indices: list[torch.Tensor], k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The best ``k`` of ranked lists ``[Q, n_i]`` given in gallery order (every index of list
    ``i`` below every index of list ``i + 1``, equal scores within a list in index order): a
    stable sort on score alone then breaks ties by gallery index."""
    scores_all = torch.cat(scores, dim=1)
    indices_all = torch.cat(indices, dim=1)
    order = torch.sort(scores_all, dim=1, descending=True, stable=True).indices[:, :k]
    return scores_all.gather(1, order), indices_all.gather(1, order)


def _check_topk(topk: int) -> int:
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)):
        raise TypeError(f"topk must be an int, got {type(topk).__name__}")
    if topk < 1:
        raise ValueError(f"topk must be at least 1, got {topk}")
    return int(topk)


def _positive_int(value: int | None, name: str) -> int | None:
    """``value`` as an int, or None (meaning: choose automatically)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int or None (automatic), got {value!r}")
    return int(value)


def _check_array(array: Any, name: str, ndims: tuple[int, ...]) -> None:
    if not isinstance(array, (torch.Tensor, np.ndarray)):
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy array, got {type(array).__name__}; "
            "convert it with torch.as_tensor(...) or np.asarray(...)"
        )
    floating = array.is_floating_point() if isinstance(array, torch.Tensor) else array.dtype.kind == "f"
    if not floating:
        raise TypeError(f"{name} must hold floating-point embeddings, got dtype {array.dtype}")
    if array.ndim not in ndims:
        shapes = " or ".join({1: "[D]", 2: "[N, D]"}[n] for n in ndims)
        raise ValueError(f"{name} must have shape {shapes}, got {list(array.shape)}")


_NUMPY_DTYPES = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}


def _torch_dtype(array: ArrayLike) -> torch.dtype:
    """The torch dtype of a tensor, or of a numpy array's elements (float64 for any wider float)."""
    if isinstance(array, torch.Tensor):
        return array.dtype
    return _NUMPY_DTYPES.get(array.dtype.newbyteorder("="), torch.float64)


def _is_half(array: ArrayLike) -> bool:
    return _torch_dtype(array) in HALF_DTYPES


def _check_dtypes(query: ArrayLike, gallery: ArrayLike) -> None:
    """A half-precision query must be of the gallery's dtype (full-precision queries go with any gallery)."""
    query_dtype, gallery_dtype = _torch_dtype(query), _torch_dtype(gallery)
    if query_dtype in HALF_DTYPES and query_dtype != gallery_dtype:
        raise TypeError(
            f"query embeddings are {str(query_dtype).removeprefix('torch.')} but the gallery is "
            f"{str(gallery_dtype).removeprefix('torch.')}: pass float32 queries (they go with any gallery), "
            "or store both sides with the same --dtype"
        )


def _check_gallery(gallery: ArrayLike, dim: int | None = None) -> tuple[int, int]:
    """``(G, D)`` of a usable gallery; ``dim`` is the query width it must equal, if known."""
    _check_array(gallery, "gallery", (2,))
    num, gallery_dim = gallery.shape
    if num == 0:
        raise ValueError("gallery is empty: there is nothing to match against")
    if dim is not None and gallery_dim != dim:
        raise ValueError(
            f"query rows have {dim} dimensions but gallery rows have {gallery_dim}: embed both with the "
            "same model and the same flip setting (flip=True doubles the width)"
        )
    return num, gallery_dim


# Rows whose float32 norm falls outside this range (or is NaN/inf) are rescaled by their
# largest absolute value, in their own precision, before the float32 cast and the norm:
# rows scaled by 1e-30 would otherwise square to zero ("all zeros") and float64 rows of
# 1e300 would overflow float32 to inf. Cosine similarity does not change with scale.
_SAFE_NORM_RANGE = (1e-12, 1e12)


def _as_float32(block: ArrayLike) -> torch.Tensor:
    """A float32 tensor of ``block``, sharing memory when it already is float32 and contiguous."""
    if isinstance(block, torch.Tensor):
        return block.detach().to(torch.float32)
    if block.dtype != np.float32 or not block.flags.c_contiguous:
        with np.errstate(over="ignore", under="ignore"):  # out-of-range rows are redone by _float32_rows
            block = np.ascontiguousarray(block, dtype=np.float32)
    with warnings.catch_warnings():
        # A read-only memmap is shared, not copied; nothing here ever writes to it.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(block)


def _rescaled_rows(block: ArrayLike, picked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``picked`` of ``block`` divided by their largest absolute value, computed in the
    input's own precision, as float32; with per-row flags (finite, nonzero)."""
    if isinstance(block, torch.Tensor):
        original = block.detach()[picked.to(block.device)]
        finite = torch.isfinite(original).all(dim=1)
        scale = original.abs().amax(dim=1)
        usable = finite & (scale > 0)
        scaled = original / torch.where(usable, scale, torch.ones_like(scale)).unsqueeze(1)
        return scaled.to(torch.float32).to(picked.device), finite.to(picked.device), (scale > 0).to(picked.device)
    original = np.asarray(block[picked.cpu().numpy()])
    with np.errstate(all="ignore"):
        finite = np.isfinite(original).all(axis=1)
        scale = np.abs(original).max(axis=1) if original.shape[1] else np.zeros(len(original), original.dtype)
        usable = finite & (scale > 0)
        scaled = np.ascontiguousarray(original / np.where(usable, scale, 1)[:, None], dtype=np.float32)
    rows = torch.from_numpy(scaled).to(picked.device)
    return rows, torch.from_numpy(finite).to(picked.device), torch.from_numpy(scale > 0).to(picked.device)


def _float32_rows(block: ArrayLike, name: str, row_ids: int | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``block`` as float32 rows with their L2 norms (exactly 1 for unit rows), refusing rows
    that cannot be scaled to unit length: NaN/inf values or all zeros.

    Rows of extreme scale (norm outside ``_SAFE_NORM_RANGE`` in float32) are first divided by
    their largest absolute value in the input's precision, which leaves their cosine
    similarities unchanged. ``row_ids`` names rows in errors: the input row number of
    ``block[0]``, or of every row.
    """
    rows = _as_float32(block)
    norms = torch.linalg.vector_norm(rows, dim=1)
    low, high = _SAFE_NORM_RANGE
    unsafe = ~((norms >= low) & (norms <= high))
    if bool(unsafe.any()):
        picked = unsafe.nonzero().squeeze(1)
        scaled, finite, nonzero = _rescaled_rows(block, picked)
        bad = ~(finite & nonzero)
        if bool(bad.any()):
            first = int(bad.nonzero()[0, 0])
            row = int(picked[first])
            if not bool(finite[first]):
                problem = "contains NaN or infinite values"
            else:
                problem = "is all zeros, so its cosine similarity is undefined"
            row_id = row_ids + row if isinstance(row_ids, int) else int(row_ids[row])
            raise ValueError(f"{name} row {row_id} {problem}; check the embeddings that produced it")
        rows = rows.clone()  # never write into the caller's tensor or a shared memmap
        norms = norms.clone()
        rows[picked] = scaled
        norms[picked] = torch.linalg.vector_norm(scaled, dim=1)
    norms = torch.where((norms - 1).abs() <= UNIT_NORM_TOLERANCE, 1.0, norms)
    return rows, norms


def _prepare_queries(query: ArrayLike) -> torch.Tensor:
    """Queries as a float32 ``[Q, D]`` tensor with unit rows (one vector ``[D]`` -> ``[1, D]``)."""
    _check_array(query, "query", (1, 2))
    if query.ndim == 1:
        query = query[None]
    if query.shape[1] == 0:
        raise ValueError("query rows have 0 dimensions")
    rows, norms = _float32_rows(query, "query", 0)
    return rows / norms.unsqueeze(1)


def _gallery_chunks(
    gallery: ArrayLike, chunk_size: int, progress: bool, desc: str, first_row: int = 0
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(row number, float32 rows, the same, row norms)`` chunk by chunk, validating as it
    reads; rows are numbered from ``first_row`` (the shape of :func:`_screen_chunks`)."""
    num = gallery.shape[0]
    with tqdm(total=num, disable=not progress, desc=desc, unit="row") as bar:
        for start in range(0, num, chunk_size):
            block = gallery[start : start + chunk_size]
            rows, norms = _float32_rows(block, "gallery", first_row + start)
            yield first_row + start, rows, rows, norms
            bar.update(rows.shape[0])


class _Buffers:
    """Scratch tensors reused from chunk to chunk (valid until the next ``get`` of the same name)."""

    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype,
            device: torch.device | str = "cpu") -> torch.Tensor:
        tensor = self._tensors.get(name)
        if tensor is None or tensor.shape != shape or tensor.dtype != dtype or tensor.device != torch.device(device):
            tensor = self._tensors[name] = torch.empty(shape, dtype=dtype, device=device)
        return tensor


def _screen_chunks(
    gallery: ArrayLike, chunk_size: int, progress: bool, desc: str, first_row: int, buffers: _Buffers
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(row number, rows as stored, bfloat16 rows, norms)`` for the bfloat16 screen.

    Rows stay in their own precision (no float32 copy of a half-precision chunk: only candidates
    are upcast, when re-scored) and norms are computed in it too, accumulated in float32 and
    rounded to the storage dtype (the screen's bound allows for that). A chunk holding a row
    that is not finite, all zeros or of extreme scale is read the careful float32 way instead,
    which refuses or rescales the row exactly as the float32 path does.
    """
    num = gallery.shape[0]
    with tqdm(total=num, disable=not progress, desc=desc, unit="row") as bar:
        for start in range(0, num, chunk_size):
            block = gallery[start : start + chunk_size]
            stored = block.detach() if isinstance(block, torch.Tensor) else _as_tensor(block)
            norms = torch.linalg.vector_norm(stored, dim=1).float()
            low, high = max(_SAFE_NORM_RANGE[0], torch.finfo(stored.dtype).tiny), _SAFE_NORM_RANGE[1]
            if not bool(((norms >= low) & (norms <= high)).all()):  # (norms below ``tiny`` lose precision)
                stored, norms = _float32_rows(block, "gallery", first_row + start)
            narrow = stored
            if stored.dtype != torch.bfloat16:
                narrow = buffers.get("narrow", tuple(stored.shape), torch.bfloat16).copy_(stored)
            yield first_row + start, stored, narrow, norms
            bar.update(len(stored))


def _as_tensor(block: np.ndarray) -> torch.Tensor:
    """A numpy block as a tensor in its own precision when torch has it (float16/32), else float32."""
    if block.dtype in (np.float16, np.float32) and block.dtype.isnative:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(np.ascontiguousarray(block))
    return _as_float32(block)


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            'the faiss backend needs faiss: pip install "csdn-reid[faiss]" (or pip install faiss-cpu)'
        ) from error
    return faiss


class FaissIndex:
    """An approximate inner-product index over unit-normalised gallery rows (faiss).

    Build it once and call ``search`` many times: building dominates the cost, so
    ``match(..., backend="faiss")``, which builds one per call, seldom pays off. It
    wins on latency for a few queries at a time (the exact backend reads the whole
    gallery per call); for batches of ~100+ queries of 3072-d embeddings the exact
    backend comes within ~1.3x on CPU, exactly (see ``benchmarks/bench_match.py``). The index keeps a float32 copy of the gallery in
    memory.

    Methods:
        ``"ivf"`` (default): ``IndexIVFFlat``. k-means splits the gallery into ``nlist``
        lists (default ``sqrt(G)``, at most ``G / 39`` so every centroid gets enough
        training rows), trained on ``train_size`` random rows (default ``64 * nlist``);
        a search scans the ``nprobe`` nearest lists (default ``nlist // 8``, at least 8 or
        all).
        More probes: higher recall, slower.
        ``"hnsw"``: ``IndexHNSWFlat`` graph with ``hnsw_m`` links per node (default 32),
        built with ``ef_construction`` (default 40); searches keep ``ef_search``
        candidates (default 64, at least ``topk``).
        No training, slow to build for wide embeddings, fast and accurate to search.

    Results are ``Matches`` like ``match``. Where a search finds fewer than ``k``
    rows (too few probes), the missing entries are index ``-1`` with score ``-inf``
    and a warning is given.
    """

    def __init__(
        self,
        gallery: ArrayLike,
        *,
        method: str = "ivf",
        nlist: int | None = None,
        nprobe: int | None = None,
        train_size: int | None = None,
        hnsw_m: int | None = None,
        ef_construction: int | None = None,
        ef_search: int | None = None,
        seed: int = 0,
        chunk_size: int | None = None,
        progress: bool = False,
    ) -> None:
        faiss = _import_faiss()
        if method not in FAISS_METHODS:
            raise ValueError(f"unknown faiss method {method!r}; choose one of {', '.join(map(repr, FAISS_METHODS))}")
        num, dim = _check_gallery(gallery)
        self.method = method
        self.dim = dim
        chunk = _positive_int(chunk_size, "chunk_size") or max(1, _CHUNK_BYTES // (4 * dim))
        metric = faiss.METRIC_INNER_PRODUCT
        if method == "hnsw":
            self._index = faiss.IndexHNSWFlat(dim, _positive_int(hnsw_m, "hnsw_m") or 32, metric)
            self._index.hnsw.efConstruction = _positive_int(ef_construction, "ef_construction") or 40
            self._effort = _positive_int(ef_search, "ef_search") or 64
        else:
            nlist = _positive_int(nlist, "nlist") or max(1, min(round(math.sqrt(num)), num // 39))
            if nlist > num:
                raise ValueError(f"nlist={nlist} is more lists than the gallery has rows ({num})")
            self._effort = _positive_int(nprobe, "nprobe") or min(nlist, max(8, nlist // 8))
            self._index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, metric)
            self._index.cp.seed = seed
            sample = max(nlist, _positive_int(train_size, "train_size") or 64 * nlist)
            self._index.train(_unit_sample(gallery, sample, seed))
        for _, _, rows, norms in _gallery_chunks(gallery, chunk, progress, f"faiss {method}"):
            self._index.add(np.ascontiguousarray((rows / norms.unsqueeze(1)).cpu().numpy()))

    @property
    def ntotal(self) -> int:
        """Number of gallery rows in the index."""
        return int(self._index.ntotal)

    def search(self, query: ArrayLike, topk: int = 10, *, effort: int | None = None) -> Matches:
        """Approximate top-k gallery rows per query (CPU tensors).

        ``effort`` overrides ``nprobe`` (ivf) or ``ef_search`` (hnsw) for this call.
        """
        k = min(_check_topk(topk), self.ntotal)
        queries = _prepare_queries(query).cpu()
        if queries.shape[1] != self.dim:
            raise ValueError(
                f"query rows have {queries.shape[1]} dimensions but the index holds {self.dim}: embed both "
                "with the same model and the same flip setting (flip=True doubles the width)"
            )
        effort = _positive_int(effort, "effort") or self._effort
        if self.method == "hnsw":
            self._index.hnsw.efSearch = max(effort, k)
        else:
            self._index.nprobe = min(effort, self._index.nlist)
        scores, indices = self._index.search(np.ascontiguousarray(queries.numpy()), k)
        missing = indices < 0
        if missing.any():
            scores[missing] = -np.inf
            warnings.warn(
                f"faiss found fewer than {k} matches for {int(missing.any(axis=1).sum())} queries "
                "(index -1, score -inf); raise effort (nprobe / ef_search)",
                stacklevel=2,
            )
        return Matches(indices=torch.from_numpy(indices.astype(np.int64)), scores=torch.from_numpy(scores))


def _unit_sample(gallery: ArrayLike, size: int, seed: int) -> np.ndarray:
    """Unit-normalised float32 rows drawn without replacement (all rows if ``size >= G``)."""
    num = gallery.shape[0]
    if size >= num:
        picked = np.arange(num)
    else:
        picked = np.sort(np.random.default_rng(seed).choice(num, size=size, replace=False))
    block = gallery[torch.from_numpy(picked)] if isinstance(gallery, torch.Tensor) else gallery[picked]
    rows, norms = _float32_rows(block, "gallery", picked)
    rows = rows / norms.unsqueeze(1)
    return np.ascontiguousarray(rows.numpy())
