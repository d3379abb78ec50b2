"""k-reciprocal re-ranking against a plain, set-based transcription of the method."""

from __future__ import annotations

import numpy as np
import pytest

from csdn.retrieval.reranking import re_ranking, rerank_embeddings


def plain_re_ranking(q_g, q_q, g_g, k1, k2, lambda_value):
    """One item at a time, with Python sets: k-reciprocal sets, their expansion, query expansion, Jaccard."""
    dist = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64) ** 2
    dist /= dist.max(axis=1, keepdims=True)
    total, num_q = len(dist), len(q_g)
    ranking = [sorted(range(total), key=lambda j, i=i: (dist[i, j], j)) for i in range(total)]

    def reciprocal(i, k):
        return [j for j in ranking[i][: k + 1] if i in ranking[j][: k + 1]]

    vectors = np.zeros((total, total))
    for i in range(total):
        base = reciprocal(i, k1)
        expanded = set(base)
        for candidate in base:
            half = reciprocal(candidate, int(np.around(k1 / 2)))
            if len(set(half) & set(base)) > 2 / 3 * len(half):
                expanded |= set(half)
        members = sorted(expanded)
        weights = np.exp(-dist[i, members])
        vectors[i, members] = weights / weights.sum()
    if k2 > 1:
        vectors = np.array([vectors[ranking[i][:k2]].mean(axis=0) for i in range(total)])
    jaccard = np.zeros(q_g.shape)
    for q in range(num_q):
        for g in range(q_g.shape[1]):
            shared = np.minimum(vectors[q], vectors[num_q + g]).sum()
            jaccard[q, g] = 1 - shared / (2 - shared)
    return (1 - lambda_value) * jaccard + lambda_value * dist[:num_q, num_q:]


def _embeddings(seed, num_q, num_g, dim=8):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((5, dim))
    q = centres[rng.integers(0, 5, num_q)] + 0.6 * rng.standard_normal((num_q, dim))
    g = centres[rng.integers(0, 5, num_g)] + 0.6 * rng.standard_normal((num_g, dim))
    return q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)


@pytest.mark.parametrize("seed, k1, k2, lam", [(0, 20, 6, 0.3), (1, 5, 3, 0.5), (2, 7, 1, 0.0)])
def test_re_ranking_matches_the_plain_method(seed, k1, k2, lam):
    q, g = _embeddings(seed, 12, 30)

    def euclidean(a, b):
        return np.sqrt(np.maximum(2 - 2 * a @ b.T, 0))

    blocks = euclidean(q, g), euclidean(q, q), euclidean(g, g)
    fast = re_ranking(*blocks, k1=k1, k2=k2, lambda_value=lam)
    assert fast.shape == (12, 30)
    np.testing.assert_allclose(fast, plain_re_ranking(*blocks, k1, k2, lam), atol=2e-5)
    np.testing.assert_allclose(rerank_embeddings(q, g, k1=k1, k2=k2, lambda_value=lam), fast, atol=1e-6)


def test_re_ranking_rejects_similarities_and_bad_settings():
    q, g = _embeddings(3, 4, 6)
    with pytest.raises(ValueError, match="non-negative distances"):
        re_ranking(-(q @ g.T), -(q @ q.T), -(g @ g.T))
    with pytest.raises(ValueError, match="k1"):
        rerank_embeddings(q, g, k1=0)
    with pytest.raises(ValueError, match="disagree"):
        re_ranking(np.ones((4, 6)), np.ones((4, 4)), np.ones((5, 5)))
