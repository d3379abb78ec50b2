"""VI-ReID metrics (CMC, mAP, mINP) with the conventions of the literature's evaluation code.

The three functions follow the evaluation code shared across the VI-ReID literature
(AGW, DDAG, and the LLCM release), whose numbers papers report:

- the gallery is ranked by increasing distance (``distmat`` is a distance: smaller = closer);
- some gallery images are ignored per query: for SYSU-MM01, every camera-2 image when the
  query comes from camera 3 (the two cameras watch the same room); for LLCM, images with
  the query's identity *and* camera; for RegDB, none;
- SYSU-MM01 and LLCM count CMC over *identities*: the ranked list keeps only the first
  image of each identity, so rank-k means "the true identity is among the first k
  identities"; RegDB uses the plain per-image CMC;
- mAP (mean of the per-query average precision) and mINP (mean of
  ``#true matches / rank of the hardest true match``) use the full ranking;
- a query with no true match left in the gallery is skipped (not counted as a miss).

Everything is vectorised over queries (in blocks that bound memory to a few hundred
MB). Equal distances are ordered by NumPy's default ``argsort``, row by row, exactly
as the reference scripts order them. A gallery with fewer identities
(SYSU, LLCM) or images (RegDB) than ``max_rank`` gives a correspondingly shorter CMC.

The protocols end to end (:func:`csdn.evaluation.evaluate`) live in :mod:`csdn.evaluation.protocol`,
their result types in :mod:`csdn.evaluation.results`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["eval_sysu", "eval_regdb", "eval_llcm"]

_BLOCK_ELEMENTS = 1 << 21  # query rows per block x gallery size: bounds the temporary arrays

# keep(rows, order) -> which of the ranked gallery images (order = argsort of those query rows)
# the protocol keeps, [rows, G] bool, or None for all
KeepMask = Callable[[slice, np.ndarray], "np.ndarray | None"]


def _array(value: Any, name: str, ndim: int, length: int | None = None) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensors
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {array.shape}")
    if length is not None and array.shape[0] != length:
        raise ValueError(f"{name} has {array.shape[0]} entries, but distmat implies {length}")
    return array


def _inputs(distmat: Any, q_pids: Any, g_pids: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dist = _array(distmat, "distmat", 2)
    if not np.issubdtype(dist.dtype, np.number) or np.isnan(dist).any():
        raise ValueError("distmat must hold numeric distances without NaN")
    num_q, num_g = dist.shape
    if num_q == 0 or num_g == 0:
        raise ValueError(f"distmat is empty ({num_q} queries x {num_g} gallery images)")
    return dist, _array(q_pids, "q_pids", 1, num_q), _array(g_pids, "g_pids", 1, num_g)


def _check_max_rank(max_rank: int) -> None:
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")


def _ignored_before(kept: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """How many ignored images rank ahead of each position ``(row, col)`` of the ranked lists."""
    width = kept.shape[1]
    ignored_row, ignored_col = np.nonzero(~kept)
    ignored = ignored_row * width + ignored_col  # sorted: nonzero is row-major
    ahead_in_earlier_rows = np.searchsorted(ignored, row * width)
    return np.searchsorted(ignored, row * width + col) - ahead_in_earlier_rows


def _ranking(
    dist: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, keep: KeepMask, by_identity: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per query: (has a true match, rank of the first true match, AP, INP).

    The rank counts kept gallery images, or with ``by_identity`` distinct kept
    identities. After the sort, the work is sparse: true matches are few per query,
    so AP and INP are computed at their positions only.
    """
    num_q, num_g = dist.shape
    valid = np.zeros(num_q, dtype=bool)
    hit_rank = np.zeros(num_q, dtype=np.int64)
    ap = np.zeros(num_q)
    inp = np.zeros(num_q)
    identities, inverse = np.unique(g_pids, return_inverse=True)
    g_codes = np.asarray(inverse, dtype=np.int32).reshape(-1)
    slot = np.minimum(np.searchsorted(identities, q_pids), len(identities) - 1)
    q_codes = np.where(identities[slot] == q_pids, slot, -1)  # -1: identity not in the gallery
    block = max(1, _BLOCK_ELEMENTS // num_g)
    for start in range(0, num_q, block):
        rows = slice(start, min(start + block, num_q))
        count = rows.stop - rows.start
        order = np.argsort(dist[rows], axis=1)  # the reference scripts' sort, ties included
        codes = g_codes[order]
        kept = keep(rows, order)
        match = codes == q_codes[rows, None]
        if kept is not None:
            match &= kept
        row, col = np.nonzero(match)  # row-major: each query's matches in rank order
        rank = col + 1  # 1-based rank among kept images
        if kept is not None:
            rank -= _ignored_before(kept, row, col)
        num_rel = np.bincount(row, minlength=count)
        first = np.cumsum(num_rel) - num_rel  # index of each query's first match in row/col/rank
        nth = np.arange(len(row)) - first[row] + 1
        found = num_rel > 0
        first, matched = first[found], np.flatnonzero(found)
        valid[rows] = found
        ap[rows] = np.bincount(row, weights=nth / rank, minlength=count) / np.maximum(num_rel, 1)
        inp[start + matched] = num_rel[found] / rank[first + num_rel[found] - 1]
        if by_identity:  # distinct kept identities ranked before the first match, plus the match's own
            before = np.arange(num_g) < col[first][:, None]
            if kept is not None:
                before &= kept[matched]
            at_row, at_col = np.nonzero(before)
            seen = np.zeros((len(matched), len(identities)), dtype=bool)
            seen[at_row, codes[matched[at_row], at_col]] = True
            hit_rank[start + matched] = seen.sum(axis=1) + 1
        else:
            hit_rank[start + matched] = rank[first]
    return valid, hit_rank, ap, inp


def _summary(
    dist: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, keep: KeepMask, by_identity: bool, max_rank: int
) -> tuple[np.ndarray, float, float]:
    _check_max_rank(max_rank)
    valid, hit_rank, ap, inp = _ranking(dist, q_pids, g_pids, keep, by_identity)
    if not valid.any():
        raise ValueError(
            f"none of the {len(q_pids)} queries has a true match in the gallery (after the protocol's "
            "exclusions); check that queries and gallery number identities the same way"
        )
    length = min(max_rank, len(np.unique(g_pids)) if by_identity else len(g_pids))
    cmc = (hit_rank[valid, None] <= np.arange(1, length + 1)).mean(axis=0)
    return cmc, float(ap[valid].mean()), float(inp[valid].mean())


def eval_sysu(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 20) -> tuple[np.ndarray, float, float]:
    """SYSU-MM01 metrics: identity-level CMC, mAP, mINP; camera-3 queries ignore camera-2 images.

    Returns ``(cmc, mAP, mINP)``: ``cmc[k-1]`` is the rank-k accuracy; all values in [0, 1].
    """
    dist, q_pids, g_pids = _inputs(distmat, q_pids, g_pids)
    q_camids = _array(q_camids, "q_camids", 1, len(q_pids))
    g_not_cam2 = _array(g_camids, "g_camids", 1, len(g_pids)) != 2
    from_cam3 = q_camids == 3

    def keep(rows: slice, order: np.ndarray) -> np.ndarray | None:
        return g_not_cam2[order] | ~from_cam3[rows, None]

    return _summary(dist, q_pids, g_pids, keep, True, max_rank)


def eval_llcm(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 20) -> tuple[np.ndarray, float, float]:
    """LLCM metrics: identity-level CMC, mAP, mINP; images with the query's identity and camera are ignored."""
    dist, q_pids, g_pids = _inputs(distmat, q_pids, g_pids)
    q_camids = _array(q_camids, "q_camids", 1, len(q_pids))
    g_camids = _array(g_camids, "g_camids", 1, len(g_pids))

    def keep(rows: slice, order: np.ndarray) -> np.ndarray | None:
        return (g_pids[order] != q_pids[rows, None]) | (g_camids[order] != q_camids[rows, None])

    return _summary(dist, q_pids, g_pids, keep, True, max_rank)


def eval_regdb(distmat, q_pids, g_pids, max_rank: int = 20) -> tuple[np.ndarray, float, float]:
    """RegDB metrics: plain per-image CMC, mAP, mINP over the whole gallery."""
    dist, q_pids, g_pids = _inputs(distmat, q_pids, g_pids)
    return _summary(dist, q_pids, g_pids, lambda rows, order: None, False, max_rank)


# ---------------------------------------------------------------------------- results


def _eval_without_cameras(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 20):
    """:func:`eval_regdb` under the camera-taking signature the table below shares."""
    return eval_regdb(distmat, q_pids, g_pids, max_rank)


# a reader's ``metric`` -> its scoring rule, all called (dist, q_pids, g_pids, q_cams, g_cams, max_rank)
METRICS: dict[str, Callable[..., tuple[np.ndarray, float, float]]] = {
    "sysu": eval_sysu,  # camera-3 probes ignore camera-2 images (same location)
    "llcm": eval_llcm,  # images of the probe's identity and camera are ignored
    "regdb": _eval_without_cameras,  # no camera filtering
}
