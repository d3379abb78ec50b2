"""PreparedGallery: the screen's bfloat16 copy and norms computed once give the same exact top-k as a
plain search, on random rows and adversarial near-ties, and refuse rows changed after preparing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_match_screened import DTYPES, assert_exact_topk, near_tie_gallery

from csdn.retrieval import PreparedGallery, match
from csdn.retrieval.exact import match_arrays


def random_gallery(dtype: torch.dtype, rows: int = 500, dim: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    scale = 0.2 + 3 * torch.rand(rows, 1, generator=generator)
    gallery = (torch.randn(rows, dim, generator=generator) * scale).to(dtype)
    return torch.randn(90, dim, generator=generator), gallery


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk_size", [7, 128, None])
def test_a_prepared_gallery_ranks_exactly_as_the_rows_do(dtype, chunk_size):
    query, gallery = random_gallery(dtype)
    prepared = PreparedGallery(gallery, chunk_size=chunk_size)
    plain = match(query, gallery, topk=12, chunk_size=chunk_size, screen=True)
    for _ in range(2):  # searched twice: the kept chunks are not consumed or changed by a search
        result = match(query, prepared, topk=12, screen=True)
        assert_exact_topk(result, query, gallery, 12)
        assert torch.equal(result.indices, plain.indices)  # the same chunks, the same computation
        torch.testing.assert_close(result.scores, plain.scores, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_a_prepared_gallery_is_exact_on_adversarial_near_ties(dtype, seed):
    query, gallery, duplicates = near_tie_gallery(dtype, seed)
    result = match(query, PreparedGallery(gallery, chunk_size=13), topk=40, screen=True)
    assert_exact_topk(result, query, gallery, 40)
    for indices in result.indices.tolist():
        assert [i for i in indices if i in duplicates] == duplicates  # exact ties in gallery order


def test_rows_changed_in_place_after_preparing_are_refused():
    query, gallery = random_gallery(torch.float32)
    prepared = PreparedGallery(gallery)
    gallery[3] = -gallery[3]
    with pytest.raises(ValueError, match="changed in place.*new PreparedGallery"):
        match(query, prepared, topk=5, screen=True)


def test_a_bad_row_is_refused_when_preparing_naming_it():
    _, gallery = random_gallery(torch.float16)
    gallery[57, 2] = float("nan")
    with pytest.raises(ValueError, match="57"):
        PreparedGallery(gallery, chunk_size=20)


def test_chunk_size_belongs_to_the_prepared_gallery():
    query, gallery = random_gallery(torch.float32)
    prepared = PreparedGallery(gallery, chunk_size=50)
    with pytest.raises(ValueError, match="pass chunk_size to PreparedGallery"):
        match_arrays(query, prepared, 5, chunk_size=60, screen=True)
    same_chunks = match(query, gallery, 5, chunk_size=50)  # torch.equal below: the same chunks, the same kernels
    assert torch.equal(match_arrays(query, prepared, 5, chunk_size=50).indices, same_chunks.indices)


def test_numpy_memmap_rows_and_first_row(tmp_path):
    query, gallery = random_gallery(torch.float32)
    np.save(tmp_path / "g.npy", gallery.numpy())
    rows = np.load(tmp_path / "g.npy", mmap_mode="r")
    prepared = PreparedGallery(rows, chunk_size=64)
    assert prepared.shape == (500, 40) and len(prepared) == 500
    result = match_arrays(query, prepared, 8, screen=True, first_row=1000)
    expected = match(query, gallery, 8, screen=True, chunk_size=64)
    assert torch.equal(result.indices, expected.indices + 1000)


def test_without_the_screen_the_rows_are_searched_in_float32():
    query, gallery = random_gallery(torch.bfloat16)
    result = match(query, PreparedGallery(gallery), topk=6, screen=False)
    assert_exact_topk(result, query, gallery, 6)
