"""``FaissIndex``: approximate inner-product search (optional extra ``csdn-reid[faiss]``), for few
queries at a time against a gallery that is searched many times."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from csdn.retrieval.checks import CHUNK_BYTES, check_gallery, check_topk, positive_int
from csdn.retrieval.matches import Matches
from csdn.retrieval.rows import ArrayLike, float32_rows, gallery_chunks, prepare_queries

__all__ = ["FAISS_METHODS", "FaissIndex"]

FAISS_METHODS = ("ivf", "hnsw")


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
        num, dim = check_gallery(gallery)
        self.method = method
        self.dim = dim
        chunk = positive_int(chunk_size, "chunk_size") or max(1, CHUNK_BYTES // (4 * dim))
        metric = faiss.METRIC_INNER_PRODUCT
        if method == "hnsw":
            self._index = faiss.IndexHNSWFlat(dim, positive_int(hnsw_m, "hnsw_m") or 32, metric)
            self._index.hnsw.efConstruction = positive_int(ef_construction, "ef_construction") or 40
            self._effort = positive_int(ef_search, "ef_search") or 64
        else:
            nlist = positive_int(nlist, "nlist") or max(1, min(round(math.sqrt(num)), num // 39))
            if nlist > num:
                raise ValueError(f"nlist={nlist} is more lists than the gallery has rows ({num})")
            self._effort = positive_int(nprobe, "nprobe") or min(nlist, max(8, nlist // 8))
            self._index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, metric)
            self._index.cp.seed = seed
            sample = max(nlist, positive_int(train_size, "train_size") or 64 * nlist)
            self._index.train(_unit_sample(gallery, sample, seed))
        for _, _, rows, norms in gallery_chunks(gallery, chunk, progress, f"faiss {method}"):
            self._index.add(np.ascontiguousarray((rows / norms.unsqueeze(1)).cpu().numpy()))

    @property
    def ntotal(self) -> int:
        """Number of gallery rows in the index."""
        return int(self._index.ntotal)

    def search(self, query: ArrayLike, topk: int = 10, *, effort: int | None = None) -> Matches:
        """Approximate top-k gallery rows per query (CPU tensors).

        ``effort`` overrides ``nprobe`` (ivf) or ``ef_search`` (hnsw) for this call.
        """
        k = min(check_topk(topk), self.ntotal)
        queries = prepare_queries(query).cpu()
        if queries.shape[1] != self.dim:
            raise ValueError(
                f"query rows have {queries.shape[1]} dimensions but the index holds {self.dim}: embed both "
                "with the same model and the same flip setting (flip=True doubles the width)"
            )
        effort = positive_int(effort, "effort") or self._effort
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
    rows, norms = float32_rows(block, "gallery", picked)
    rows = rows / norms.unsqueeze(1)
    return np.ascontiguousarray(rows.numpy())
