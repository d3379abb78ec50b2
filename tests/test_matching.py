"""csdn.match (exact, chunked) against a float64 brute force, and the optional faiss backend."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from csdn.retrieval import FaissIndex, Matches
from csdn.retrieval.exact import match_arrays as match


def brute_force(query, gallery, k):
    """float64 cosine scores, ranked with a stable sort: equal scores keep gallery order."""
    q = np.atleast_2d(np.asarray(query, dtype=np.float64))
    g = np.asarray(gallery, dtype=np.float64)
    scores = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def assert_matches(result, query, gallery, k):
    order, scores = brute_force(query, gallery, k)
    assert isinstance(result, Matches)
    assert result.indices.dtype == torch.int64 and result.scores.dtype == torch.float32
    np.testing.assert_array_equal(result.indices.numpy(), order)
    np.testing.assert_allclose(result.scores.numpy(), scores, rtol=0, atol=2e-6)


def random_rows(generator, rows, dim=24):
    """Random rows of very different lengths: cosine scores must not depend on them."""
    return torch.randn(rows, dim, generator=generator) * (0.1 + 5 * torch.rand(rows, 1, generator=generator))


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, 101, None])
@pytest.mark.parametrize("query_chunk_size", [2, 5, None])
def test_exact_equals_brute_force_for_any_chunking(chunk_size, query_chunk_size):
    generator = torch.Generator().manual_seed(0)
    query, gallery = random_rows(generator, 13), random_rows(generator, 101)
    result = match(query, gallery, topk=10, chunk_size=chunk_size, query_chunk_size=query_chunk_size)
    assert_matches(result, query, gallery, 10)
    assert torch.all(result.scores[:, :-1] >= result.scores[:, 1:])


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 9, None])
def test_equal_scores_rank_smaller_gallery_index_first(chunk_size):
    # Gallery rows are unit axes times powers of two, so after normalisation every score
    # is exactly one query coordinate and each axis is a group of exactly tied rows
    # spread over the chunks.
    generator = torch.Generator().manual_seed(1)
    axes = torch.randint(0, 4, (40,), generator=generator)
    gallery = torch.nn.functional.one_hot(axes, 6).float() * torch.tensor([1.0, 2.0, 0.5, 4.0]).repeat(10)[:, None]
    query = torch.rand(7, 6, generator=generator) + 0.1
    for k in (1, 3, 8, 17, 40):
        assert_matches(match(query, gallery, topk=k, chunk_size=chunk_size), query, gallery, k)


@pytest.mark.parametrize("chunk_size", [2, 16, None])
def test_all_equal_scores_give_the_first_rows_in_order(chunk_size):
    gallery = torch.ones(300, 8)
    result = match(torch.rand(3, 8) + 0.1, gallery, topk=6, chunk_size=chunk_size)
    assert result.indices.tolist() == [list(range(6))] * 3
    assert torch.all(result.scores == result.scores[:, :1])


def test_topk_larger_than_gallery_returns_every_row_ranked():
    generator = torch.Generator().manual_seed(2)
    query, gallery = random_rows(generator, 4), random_rows(generator, 9)
    result = match(query, gallery, topk=50, chunk_size=4)
    assert result.indices.shape == (4, 9)
    assert_matches(result, query, gallery, 9)


def test_single_query_vector_gives_one_row():
    generator = torch.Generator().manual_seed(3)
    query, gallery = random_rows(generator, 5), random_rows(generator, 30)
    one = match(query[2], gallery, topk=5)
    assert one.indices.shape == (1, 5) and one.scores.shape == (1, 5)
    batch = match(query, gallery, topk=5)
    assert torch.equal(one.indices[0], batch.indices[2])
    torch.testing.assert_close(one.scores[0], batch.scores[2])


def test_numpy_inputs_of_any_float_width():
    generator = torch.Generator().manual_seed(4)
    query, gallery = random_rows(generator, 6).numpy(), random_rows(generator, 50).numpy()
    assert_matches(match(query.astype(np.float64), gallery.astype(np.float64), topk=7, chunk_size=8), query, gallery, 7)
    half = gallery.astype(np.float16)
    assert_matches(match(query, half, topk=7, chunk_size=8), query, half.astype(np.float32), 7)
    mixed = match(torch.from_numpy(query), half, topk=7)
    assert mixed.indices.shape == (6, 7)


def test_memmap_gallery_is_streamed_in_chunks(tmp_path):
    generator = torch.Generator().manual_seed(5)
    query, gallery = random_rows(generator, 6), random_rows(generator, 203)
    path = tmp_path / "gallery.npy"
    np.save(path, gallery.numpy())
    on_disk = np.load(path, mmap_mode="r")
    assert_matches(match(query, on_disk, topk=10, chunk_size=16), query, gallery, 10)

    class Recorder(np.ndarray):
        reads: list = []

        def __getitem__(self, item):
            Recorder.reads.append(item)
            return np.asarray(super().__getitem__(item))

    recorded = on_disk.view(Recorder)
    assert_matches(match(query, recorded, topk=10, chunk_size=16), query, gallery, 10)
    assert Recorder.reads and all(isinstance(r, slice) and r.stop - r.start <= 16 for r in Recorder.reads)
    assert sum(min(r.stop, 203) - r.start for r in Recorder.reads) == 203


def test_matches_helpers():
    generator = torch.Generator().manual_seed(6)
    query, gallery = random_rows(generator, 3), random_rows(generator, 20)
    result = match(query, gallery, topk=4)
    assert len(result) == 3
    rows = list(result)
    assert len(rows) == 3 and torch.equal(rows[1][0], result.indices[1]) and torch.equal(rows[1][1], result.scores[1])
    listed = result.to_list()
    assert listed[2] == [(int(i), float(s)) for i, s in zip(result.indices[2], result.scores[2])]
    assert isinstance(listed[0][0][0], int) and isinstance(listed[0][0][1], float)


def test_empty_query_set_and_grad_tracking_inputs():
    gallery = torch.randn(10, 8)
    empty = match(torch.empty(0, 8), gallery, topk=3)
    assert empty.indices.shape == (0, 3) and empty.scores.shape == (0, 3)
    query = torch.randn(2, 8, requires_grad=True)
    result = match(query, gallery, topk=3)
    assert not result.scores.requires_grad
    result.scores.add_(0)  # ordinary tensors, not inference-mode ones: usable in place
    assert_matches(match(query.detach(), gallery, topk=3), query.detach(), gallery, 3)


def test_unit_rows_score_as_their_inner_product():
    generator = torch.Generator().manual_seed(7)
    unit = torch.nn.functional.normalize(random_rows(generator, 40), dim=1)
    result = match(unit[:5], unit, topk=3)
    assert result.indices[:, 0].tolist() == list(range(5))
    torch.testing.assert_close(result.scores[:, 0], torch.ones(5))
    expected = (unit[:5] @ unit.T).gather(1, result.indices)
    torch.testing.assert_close(result.scores, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "query, gallery, kwargs, error, message",
    [
        (torch.randn(2, 8), torch.randn(5, 6), {}, ValueError, "8 dimensions but gallery rows have 6"),
        (torch.randn(2, 8), torch.randn(0, 8), {}, ValueError, "gallery is empty"),
        (torch.randn(2, 8), torch.randn(5, 8), {"topk": 0}, ValueError, "topk must be at least 1"),
        (torch.randn(2, 8), torch.randn(5, 8), {"topk": 2.5}, TypeError, "topk must be an int"),
        (torch.randn(2, 8), torch.randn(5, 8), {"topk": True}, TypeError, "topk must be an int"),
        (torch.randn(2, 8), torch.randn(5, 8), {"chunk_size": 0}, ValueError, "chunk_size must be a positive int"),
        (torch.randn(2, 8), torch.randn(5, 8), {"query_chunk_size": -1}, ValueError, "query_chunk_size must be"),
        (torch.randn(2, 8), torch.randn(5, 8), {"backend": "annoy"}, ValueError, "unknown backend 'annoy'"),
        (torch.randn(2, 8), torch.randn(5, 8), {"faiss_options": {"nlist": 2}}, ValueError, 'backend="faiss"'),
        (torch.randn(2, 8), torch.randn(5, 8), {"backend": "faiss", "chunk_size": 2}, ValueError, "faiss_options"),
        (torch.randn(2, 2, 8), torch.randn(5, 8), {}, ValueError, r"query must have shape \[D\] or \[N, D\]"),
        (torch.randn(2, 8), torch.randn(8), {}, ValueError, r"gallery must have shape \[N, D\]"),
        (torch.randn(2, 8), torch.ones(5, 8, dtype=torch.int64), {}, TypeError, "floating-point.*int64"),
        (np.ones((2, 8), dtype=np.int32), torch.randn(5, 8), {}, TypeError, "floating-point.*int32"),
        ([[1.0] * 8], torch.randn(5, 8), {}, TypeError, "torch.Tensor or numpy array, got list"),
        (torch.randn(2, 0), torch.randn(5, 0), {}, ValueError, "0 dimensions"),
    ],
)
def test_bad_input_is_refused_clearly(query, gallery, kwargs, error, message):
    with pytest.raises(error, match=message):
        match(query, gallery, **kwargs)


@pytest.mark.parametrize(
    "where, value, message",
    [
        ("gallery", float("nan"), "gallery row 37 contains NaN or infinite values"),
        ("gallery", float("inf"), "gallery row 37 contains NaN or infinite values"),
        ("gallery", 0.0, "gallery row 37 is all zeros"),
        ("query", float("-inf"), "query row 1 contains NaN or infinite values"),
        ("query", 0.0, "query row 1 is all zeros"),
    ],
)
def test_unusable_rows_are_named(where, value, message):
    inputs = {"query": torch.randn(3, 8), "gallery": torch.randn(50, 8)}
    row = 37 if where == "gallery" else 1
    if value == 0.0:
        inputs[where][row] = 0.0
    else:
        inputs[where][row, 5] = value
    query, gallery = inputs["query"], inputs["gallery"]
    with pytest.raises(ValueError, match=message):
        match(query, gallery, chunk_size=16)


def test_missing_faiss_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "csdn-reid\[faiss\]"'):
        match(torch.randn(2, 8), torch.randn(50, 8), backend="faiss")
    with pytest.raises(ImportError, match="faiss-cpu"):
        FaissIndex(torch.randn(50, 8))


def clustered(generator, ids, per_id, dim=32, latent=8):
    """Identity-structured unit rows: ``per_id`` noisy views of each of ``ids`` centres."""
    projection = torch.randn(latent, dim, generator=generator)
    centres = torch.randn(ids, latent, generator=generator).repeat_interleave(per_id, 0)
    rows = (centres + 0.3 * torch.randn(centres.shape, generator=generator)) @ projection
    return torch.nn.functional.normalize(rows + 0.2 * torch.randn(rows.shape, generator=generator), dim=1)


def recall(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())])


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_faiss_recall_against_exact(method):
    pytest.importorskip("faiss")
    generator = torch.Generator().manual_seed(8)
    data = clustered(generator, ids=120, per_id=15)
    gallery, query = data[::3].clone(), data[1::3][:60].clone()
    exact = match(query, gallery, topk=10)
    index = FaissIndex(gallery.numpy(), method=method)
    assert index.ntotal == gallery.shape[0]
    found = index.search(query, topk=10)
    assert found.indices.shape == (60, 10) and found.indices.dtype == torch.int64
    assert recall(found.indices, exact.indices) >= 0.9
    expected = torch.nn.functional.normalize(query, dim=1) @ gallery.T
    torch.testing.assert_close(found.scores, expected.gather(1, found.indices), rtol=0, atol=1e-5)
    assert torch.all(found.scores[:, :-1] >= found.scores[:, 1:])
    # Searching every list / the whole graph finds the exact top-k (up to swaps of near-equal scores).
    thorough = index.search(query, topk=10, effort=600)
    torch.testing.assert_close(thorough.scores, exact.scores, rtol=0, atol=1e-5)
    via_match = match(query, gallery, topk=10, backend="faiss", faiss_options={"method": method})
    assert via_match.indices.shape == (60, 10) and recall(via_match.indices, exact.indices) >= 0.9
    with pytest.raises(ValueError, match="unknown faiss method 'nope'"):  # the options reach FaissIndex
        match(query, gallery, backend="faiss", faiss_options={"method": "nope"})


def test_faiss_reports_short_results_and_bad_options():
    pytest.importorskip("faiss")
    generator = torch.Generator().manual_seed(9)
    gallery = clustered(generator, ids=20, per_id=10)
    index = FaissIndex(gallery, method="ivf", nlist=20)
    with pytest.warns(UserWarning, match="fewer than 40 matches"):
        short = index.search(gallery[:3], topk=40, effort=1)
    missing = short.indices < 0
    assert missing.any() and torch.all(torch.isinf(short.scores[missing]))
    with pytest.raises(ValueError, match="unknown faiss method 'flat'"):
        FaissIndex(gallery, method="flat")
    with pytest.raises(ValueError, match=r"nlist=500 is more lists than the gallery has rows \(200\)"):
        FaissIndex(gallery, nlist=500)
    with pytest.raises(ValueError, match="hnsw_m must be a positive int"):
        FaissIndex(gallery, method="hnsw", hnsw_m=0)
    with pytest.raises(ValueError, match="effort must be a positive int"):
        index.search(gallery[:2], effort=0)
    with pytest.raises(ValueError, match="16 dimensions but the index holds 32"):
        index.search(torch.randn(2, 16))
    with pytest.raises(ValueError, match="gallery row 4 contains NaN"):
        FaissIndex(torch.where(torch.arange(200)[:, None] == 4, float("nan"), gallery))
