"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), the variant common in ReID code.

**Not part of the CSDN paper's protocol**: published VI-ReID numbers, the paper's
included, rank by plain embedding distance. Re-ranking is an opt-in post-process
(``csdn.evaluate(..., rerank=True)``, ``csdn eval --rerank``); report it as such.

Each image's neighbourhood is its k-reciprocal nearest neighbours (``j`` is among
``i``'s ``k1`` nearest and ``i`` among ``j``'s), expanded by the half-size
reciprocal sets of its members that overlap it by more than 2/3, weighted by
``exp(-distance)``, and smoothed over the ``k2`` nearest neighbours (query
expansion). The final distance mixes the Jaccard distance of these neighbourhoods
with the original (squared, row-normalised) distance:
``(1 - lambda_value) * jaccard + lambda_value * original``.
"""

from __future__ import annotations

import numpy as np

_ROW_BLOCK = 256  # rows per block when averaging neighbour vectors (bounds memory)


def _top_neighbours(dist: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's ``k`` nearest items (itself included), nearest first."""
    k = min(k, dist.shape[1])
    part = np.argpartition(dist, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(dist, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _reciprocal(top: np.ndarray, k: int) -> np.ndarray:
    """Mask over ``top[:, :k+1]``: which of each item's ``k`` nearest also have it among theirs."""
    forward = top[:, : k + 1]
    items = np.arange(len(top))[:, None, None]
    return (top[forward, : k + 1] == items).any(axis=2)


def re_ranking(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Re-ranked query-gallery distances ``[Q, G]`` from the three (Euclidean) distance blocks.

    The distances must be non-negative (e.g. Euclidean distances of the embeddings);
    they are squared and each row is scaled by its maximum, as in the common variant.
    """
    q_g, q_q, g_g = (np.asarray(a, dtype=np.float32) for a in (q_g_dist, q_q_dist, g_g_dist))
    num_q, num_g = q_g.shape
    if q_q.shape != (num_q, num_q) or g_g.shape != (num_g, num_g):
        raise ValueError(f"distance blocks disagree: q_g {q_g.shape}, q_q {q_q.shape}, g_g {g_g.shape}")
    if min(q_g.min(initial=0), q_q.min(initial=0), g_g.min(initial=0)) < 0:
        raise ValueError("re-ranking needs non-negative distances (e.g. Euclidean), not negated similarities")
    if k1 < 1 or k2 < 1 or not 0 <= lambda_value <= 1:
        raise ValueError(f"need k1 >= 1, k2 >= 1 and 0 <= lambda_value <= 1; got {k1}, {k2}, {lambda_value}")
    dist = np.block([[q_q, q_g], [q_g.T, g_g]]) ** 2
    dist /= np.maximum(dist.max(axis=1, keepdims=True), np.finfo(np.float32).tiny)
    total = len(dist)
    half = int(np.around(k1 / 2))
    top = _top_neighbours(dist, max(k1, half, k2) + 1)

    # k-reciprocal sets R(i, k1), expanded by members' R(c, k1/2) that overlap R(i, k1) by > 2/3
    in_set = np.zeros((total, total), dtype=bool)
    recip = _reciprocal(top, k1)
    rows = np.broadcast_to(np.arange(total)[:, None], recip.shape)
    in_set[rows[recip], top[:, : k1 + 1][recip]] = True
    half_members = top[:, : half + 1]
    half_recip = _reciprocal(top, half)
    half_size = half_recip.sum(axis=1)
    candidates = top[:, : k1 + 1]  # [N, k1+1]; only reciprocal ones count
    members = half_members[candidates]  # [N, k1+1, half+1]
    overlap = (in_set[np.arange(total)[:, None, None], members] & half_recip[candidates]).sum(axis=2)
    accept = recip & (overlap > 2.0 / 3.0 * half_size[candidates])
    add = accept[:, :, None] & half_recip[candidates]
    in_set[np.broadcast_to(np.arange(total)[:, None, None], add.shape)[add], members[add]] = True

    weights = np.where(in_set, np.exp(-dist), 0.0).astype(np.float32)
    vectors = weights / weights.sum(axis=1, keepdims=True)
    if k2 > 1:  # query expansion: average over the k2 nearest neighbours
        expanded = np.empty_like(vectors)
        for start in range(0, total, _ROW_BLOCK):
            stop = min(start + _ROW_BLOCK, total)
            expanded[start:stop] = vectors[top[start:stop, :k2]].mean(axis=1)
        vectors = expanded

    # Jaccard distance of neighbourhood vectors: 1 - sum(min) / sum(max) = 1 - m / (2 - m), rows sum to 1
    # (a loop over queries: each touches only the few columns its own vector supports)
    gallery_vectors = vectors[num_q:]
    jaccard = np.empty((num_q, num_g), dtype=np.float32)
    for q in range(num_q):
        support = np.flatnonzero(vectors[q])
        shared = np.minimum(gallery_vectors[:, support], vectors[q, support]).sum(axis=1)
        jaccard[q] = 1.0 - shared / (2.0 - shared)
    return (1.0 - lambda_value) * jaccard + lambda_value * dist[:num_q, num_q:]


def rerank_embeddings(query: np.ndarray, gallery: np.ndarray, **options) -> np.ndarray:
    """Re-ranked distances from unit-norm embeddings (Euclidean distances, ``sqrt(2 - 2 cos)``)."""
    query, gallery = np.asarray(query, dtype=np.float32), np.asarray(gallery, dtype=np.float32)

    def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sqrt(np.maximum(2.0 - 2.0 * (a @ b.T), 0.0))

    return re_ranking(euclidean(query, gallery), euclidean(query, query), euclidean(gallery, gallery), **options)
