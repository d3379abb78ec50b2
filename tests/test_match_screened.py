"""Half-precision galleries and the bfloat16 screen: the answer is the float32 one on the stored values,
checked against a float64 brute force on random data and on adversarial near-ties; the stated error
bound holds; the working memory stays bounded; mixed dtypes and mislabelled files are refused."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from csdn.errors import EmbeddingsFileError
from csdn.retrieval import load_embeddings, match, save_embeddings
from csdn.retrieval.screening import screen_slack

# float32 scores of one row against one query differ from float64 by at most ~D * 2**-24 relative;
# at D <= 256 that is below 2e-5, so larger gaps decide the ranking unambiguously.
FP32_TOLERANCE = 2e-5
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def brute_force_scores(query: torch.Tensor, gallery: torch.Tensor) -> np.ndarray:
    """float64 cosines of the stored (upcast) values."""
    q = query.double().numpy()
    g = gallery.double().numpy()
    return (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T


def assert_exact_topk(result, query, gallery, k):
    """The result is a float32-exact top-k: its scores are the rows' true scores, nothing left out scores
    higher than its k-th, it is sorted, and exactly equal rows come in gallery order."""
    scores = brute_force_scores(query, gallery)
    got = result.indices.numpy()
    assert got.shape == (len(query), min(k, gallery.shape[0]))
    np.testing.assert_allclose(result.scores.numpy(), np.take_along_axis(scores, got, 1), rtol=0, atol=FP32_TOLERANCE)
    for q in range(len(query)):
        assert len(set(got[q])) == got.shape[1]
        left_out = np.delete(scores[q], got[q])
        if left_out.size:
            assert left_out.max() <= scores[q, got[q, -1]] + FP32_TOLERANCE
        assert np.all(np.diff(result.scores[q].numpy()) <= 0)
    clear = np.sort(scores, axis=1)[:, ::-1]
    gaps = clear[:, : got.shape[1]] - clear[:, 1 : got.shape[1] + 1] if clear.shape[1] > got.shape[1] else None
    expected = np.argsort(-scores, axis=1, kind="stable")[:, : got.shape[1]]
    decided = np.all(gaps > 4 * FP32_TOLERANCE, axis=1) if gaps is not None else np.ones(len(query), bool)
    np.testing.assert_array_equal(got[decided], expected[decided])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk_size", [7, 100, None])
def test_screened_match_is_exact_on_random_rows(dtype, chunk_size):
    generator = torch.Generator().manual_seed(0)
    gallery = (torch.randn(600, 48, generator=generator) * (0.2 + 3 * torch.rand(600, 1, generator=generator))).to(
        dtype
    )
    query = torch.randn(70, 48, generator=generator)
    for screen in (True, False):
        result = match(query, gallery, topk=10, chunk_size=chunk_size, screen=screen)
        assert_exact_topk(result, query, gallery, 10)


def step(value: torch.Tensor, steps: int) -> torch.Tensor:
    """``value`` (a scalar) moved ``steps`` units in the last place of its own dtype (up if positive);
    float32 values by ``steps`` units of 2**-12 relative, so that their score gaps too stay well above
    float32 rounding."""
    if value.dtype == torch.float32:
        return value + steps * 2**-12 * value.abs()
    bits = value.reshape(1).view(torch.int16) + (steps if bool(value > 0) else -steps)
    return bits.view(value.dtype)[0]


def near_tie_gallery(dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """A query and a gallery crowded around it, shuffled: 12 copies of one row nudged by 1-3 units in the
    last place of the storage dtype at one coordinate (score gaps ~1e-5 to 1e-3, far below the
    screen's resolution of ~1e-2), 4 exact duplicates of it (true ties), 300 rows whose scores fill
    [0.97, 1] densely, so the k-th best lies where the screen cannot tell rows apart, and 84 unrelated
    rows. Also returns the duplicates' gallery indices."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.normalize(torch.randn(64, generator=generator), dim=0).to(dtype)
    rows = []
    for i in range(12):
        row = base.clone()
        column = int(torch.randint(0, 64, (1,), generator=generator))
        row[column] = step(row[column], (i % 3 + 1) * (1 if i % 2 else -1))
        rows.append(row)
    rows += [base.clone() for _ in range(4)]
    spreads = 0.25 * torch.rand(300, 1, generator=generator)
    rows += list((base.float() + spreads * torch.randn(300, 64, generator=generator) / 8).to(dtype))
    rows += list(torch.randn(84, 64, generator=generator).to(dtype))
    order = torch.randperm(400, generator=generator)
    duplicates = sorted(int(position) for position in (order.argsort()[12:16]))
    query = base.float().unsqueeze(0) + 1e-3 * torch.randn(5, 64, generator=generator)
    return query, torch.stack(rows)[order], duplicates


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_screened_match_is_exact_on_adversarial_near_ties(dtype, seed):
    query, gallery, duplicates = near_tie_gallery(dtype, seed)
    for chunk_size in (13, 64, None):
        for screen in (True, False):
            result = match(query, gallery, topk=40, chunk_size=chunk_size, screen=screen)
            assert_exact_topk(result, query, gallery, 40)
            for indices, scores in result:
                indices, scores = indices.tolist(), scores.tolist()
                assert set(duplicates) <= set(indices)
                for a in range(len(indices) - 1):  # equal scores: smaller gallery index first
                    assert scores[a] > scores[a + 1] or indices[a] < indices[a + 1]
                if screen:  # re-scoring gives identical rows identical scores, wherever they sit
                    assert [i for i in indices if i in duplicates] == duplicates


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [256, 6144])
def test_screen_error_bound_holds_where_rounding_is_worst(dtype, dim):
    """|screened cosine - exact cosine| <= A + B|c| with norms taken in the storage dtype (as the screen
    does), for rows of every length, long constant rows (worst for a sum of squares) and queries at
    their worst rounding."""
    generator = torch.Generator().manual_seed(4)
    # queries whose every coordinate sits half-way between two bfloat16 values round by the most
    query = torch.nn.functional.normalize(
        torch.ones(3, dim) * (1 + 2**-9) + 1e-3 * torch.randn(3, dim, generator=generator), dim=1
    )
    lengths = 0.01 + 20 * torch.rand(300, 1, generator=generator)
    gallery = torch.cat(
        [query.repeat(50, 1), torch.randn(300, dim, generator=generator) * lengths, torch.full((5, dim), 0.37)]
    ).to(dtype)
    norms = torch.linalg.vector_norm(gallery, dim=1).float()
    true_norms = torch.linalg.vector_norm(gallery.double(), dim=1)
    screened = (query.bfloat16() @ gallery.bfloat16().T).float() / norms
    exact = (query.double() @ gallery.double().T) / true_norms
    slack, relative = screen_slack(query, dtype)
    error = (screened.double() - exact).abs()
    assert torch.all(error <= slack.double().unsqueeze(1) + relative * screened.double().abs())
    assert error.max() > 1e-4  # the screen really is coarse here: the bound is what keeps the answer exact


def test_half_precision_query_needs_the_galleries_dtype():
    gallery = torch.randn(20, 8).to(torch.bfloat16)
    with pytest.raises(TypeError, match="query embeddings are float16 but the gallery is bfloat16.*float32 queries"):
        match(torch.randn(2, 8).half(), gallery)
    with pytest.raises(TypeError, match="float16 but the gallery is float32"):
        match(torch.randn(2, 8).half(), torch.randn(20, 8))
    assert match(torch.randn(2, 8).bfloat16(), gallery, topk=3).indices.shape == (2, 3)
    assert match(torch.randn(2, 8, dtype=torch.float64), gallery, topk=3).indices.shape == (2, 3)


def test_nan_in_a_half_precision_gallery_is_refused_naming_the_row():
    gallery = torch.randn(30, 8).half()
    gallery[17, 3] = float("nan")
    for screen in (True, False):
        with pytest.raises(ValueError, match="gallery row 17 contains NaN"):
            match(torch.randn(70, 8), gallery, screen=screen, chunk_size=5)


# ---------------------------------------------------------------------------- files
@pytest.mark.parametrize("name", ["e.npy", "e.safetensors"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_files_round_trip_and_match_exactly(tmp_path, name, dtype):
    generator = torch.Generator().manual_seed(5)
    vectors = torch.nn.functional.normalize(torch.randn(50, 16, generator=generator), dim=1)
    path = save_embeddings(tmp_path / name, vectors, dtype=dtype)
    full = save_embeddings(tmp_path / f"full{path.suffix}", vectors)
    assert path.stat().st_size < 0.6 * full.stat().st_size
    assert json.loads((tmp_path / f"{name}.json").read_text())["dtype"] == dtype
    loaded = load_embeddings(path)
    assert loaded.vectors.dtype == getattr(torch, dtype)
    assert torch.equal(loaded.vectors, vectors.to(getattr(torch, dtype)))
    query = torch.randn(4, 16, generator=generator)
    assert_exact_topk(match(query, loaded.vectors, topk=5), query, loaded.vectors, 5)


def test_half_precision_npy_is_memory_mapped(tmp_path):
    path = save_embeddings(tmp_path / "e.npy", torch.randn(10, 4), dtype="bfloat16")
    vectors = load_embeddings(path).vectors
    assert vectors.dtype == torch.bfloat16
    vectors[0, 0] = 5  # copy-on-write map: the file keeps its values
    assert load_embeddings(path).vectors[0, 0] != 5


def test_manifest_naming_another_dtype_is_refused(tmp_path):
    path = save_embeddings(tmp_path / "e.npy", torch.randn(3, 4), dtype="float16")
    manifest = tmp_path / "e.npy.json"
    manifest.write_text(manifest.read_text().replace('"float16"', '"float32"'))
    with pytest.raises(EmbeddingsFileError, match="says its rows are float32 but .*e.npy holds float16"):
        load_embeddings(path)
    bits = save_embeddings(tmp_path / "b.npy", torch.randn(3, 4), dtype="bfloat16")
    (tmp_path / "b.npy.json").unlink()  # raw bfloat16 bit patterns mean nothing without the manifest
    with pytest.raises(EmbeddingsFileError, match="holds uint16 values"):
        load_embeddings(bits)


def test_bad_dtypes_when_saving(tmp_path):
    with pytest.raises(ValueError, match="unknown embeddings dtype 'int8'; choose one of float32, float16, bfloat16"):
        save_embeddings(tmp_path / "e.npy", torch.randn(3, 4), dtype="int8")
    with pytest.raises(EmbeddingsFileError, match=r"\(as float16\): row 1 .*NaN or infinite"):
        save_embeddings(tmp_path / "e.npy", torch.tensor([[1.0, 2.0], [1e6, 0.0]]), dtype="float16")
    assert not (tmp_path / "e.npy").exists()


# ---------------------------------------------------------------------------- working memory
MEMORY_SCRIPT = textwrap.dedent("""
    import sys, threading, numpy as np, torch
    from csdn.retrieval import load_embeddings, match
    torch.set_num_threads(1)
    def anon():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:")) * 1024
    gallery = load_embeddings(sys.argv[1]).vectors
    query = torch.randn(200, gallery.shape[1])
    match(query[:70], gallery[:3000], topk=10, chunk_size=2000)  # warm up allocator and kernels
    peak, base, done = [0], anon(), threading.Event()
    def sample():
        while not done.wait(0.001):
            peak[0] = max(peak[0], anon())
    sampler = threading.Thread(target=sample); sampler.start()
    result = match(query, gallery, topk=10, chunk_size=2000, screen=sys.argv[2] == "1")
    done.set(); sampler.join()
    print((max(peak[0], anon()) - base) / 2**20)
""")


@pytest.mark.parametrize("dtype,screen", [("float32", False), ("float32", True), ("bfloat16", True)])
def test_working_memory_is_bounded_by_the_chunks(tmp_path, dtype, screen):
    """Anonymous memory (RssAnon, not the page cache a memory map fills) stays within the documented
    bound: a few chunk-sized buffers, far below the 78 MiB gallery."""
    rows, dim = 80_000, 256
    gallery = np.lib.format.open_memmap(tmp_path / "g.npy", mode="w+", dtype=np.float32, shape=(rows, dim))
    for start in range(0, rows, 10_000):
        gallery[start : start + 10_000] = np.random.default_rng(start).standard_normal((10_000, dim), np.float32)
    gallery.flush()
    path = tmp_path / "g.npy"
    if dtype != "float32":
        path = save_embeddings(tmp_path / "h.npy", torch.from_numpy(np.load(path)), dtype=dtype)
    del gallery
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(path), str(int(screen))], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    chunk_bytes = 2000 * dim * 4
    score_bytes = 200 * 2000 * 4
    bound = 6 * (chunk_bytes + score_bytes) / 2**20 + 8  # documented: chunk + bf16 copy + score block twins
    assert float(out.stdout.strip().splitlines()[-1]) < bound < 0.5 * rows * dim * 4 / 2**20


def test_float16_rows_whose_norm_overflows_float16_rank_exactly():
    """Rows of a float16 gallery are normed in float32 a block at a time: one whose float16 norm would
    overflow (|g| > 65504) is screened like any other and still ranks by its true cosine."""
    generator = torch.Generator().manual_seed(3)
    gallery = torch.randn(700, 48, generator=generator)
    gallery[[5, 300, 650]] *= 12_000  # norms ~8e4: infinite in float16 (max 65504), ordinary in float32
    gallery = gallery.to(torch.float16)
    assert torch.isinf(torch.linalg.vector_norm(gallery[[5, 300, 650]], dim=1)).all()
    query = torch.cat([gallery[[5, 300, 650]].float() / 12_000, torch.randn(10, 48, generator=generator)])
    result = match(query, gallery, topk=5)
    assert_exact_topk(result, query, gallery, 5)
    assert result.indices[:3, 0].tolist() == [5, 300, 650]
