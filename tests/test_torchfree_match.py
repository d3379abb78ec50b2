"""Where torch is not installed: ``csdn.match`` ranks numpy arrays with the numpy search, to the torch
path's answer (same tie order), and the ``csdn`` command's help and errors stay one-line messages.

"Without torch" is a subprocess whose import system answers every ``torch`` import as an absent
package does (``ModuleNotFoundError``), so nothing can reach the installed torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import csdn
from csdn.cli.app import COMMAND_MODULES, build_parser
from csdn.retrieval.exact import match_arrays
from csdn.retrieval.exact_numpy import match_arrays_numpy

ROOT = Path(__file__).resolve().parent.parent
NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
"""
# float32 products of the same values summed in another order (numpy's BLAS, torch's) differ by a few ulps
SCORE_TOLERANCE = 1e-6

MATCH_SCRIPT = (
    NO_TORCH
    + """
import json
import numpy as np
import csdn
query, gallery = np.load(sys.argv[1]), np.load(sys.argv[2])
runs = {}
for chunk in (None, 1, 7, 64):
    found = csdn.match(query, gallery, topk=int(sys.argv[3]), chunk_size=chunk, query_chunk_size=3)
    assert isinstance(found.indices, np.ndarray) and found.indices.dtype == np.int64, type(found.indices)
    assert found.scores.dtype == np.float32
    runs[str(chunk)] = {"indices": found.indices.tolist(), "scores": found.scores.tolist()}
try:
    csdn.match(query, np.concatenate([gallery, np.full((1, gallery.shape[1]), np.nan, np.float32)]))
except ValueError as error:
    runs["nan"] = str(error)
try:
    csdn.match(query, "some/folder")
except ModuleNotFoundError as error:
    runs["folder"] = str(error)
runs["torch modules"] = sorted(name for name in sys.modules if name.split(".")[0] == "torch")
print(json.dumps(runs))
"""
)


def _torch_free(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def exact_ties(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Data whose float32 arithmetic is exact in any summation order, with many exactly equal scores.

    Each query has four entries of +-1 (norm 2: its unit row holds +-0.5), gallery rows hold small
    integers and repeat: every product is exact, every norm the correctly rounded root of an exact
    integer, so both searches compute the very same scores and only the tie order can differ.
    """
    rng = np.random.default_rng(seed)
    query = np.zeros((11, 16), np.float32)
    for row in query:
        row[rng.choice(16, 4, replace=False)] = rng.choice([-1, 1], 4)
    distinct = rng.integers(-2, 3, size=(30, 16)).astype(np.float32)
    distinct[np.abs(distinct).sum(1) == 0, 0] = 1
    gallery = distinct[rng.integers(0, 30, size=150)]  # ~5 copies of each row, spread over the chunks
    return query, gallery


def near_ties(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Copies of a few rows moved by ~1e-7: scores that differ in their last bits only."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(6, 32)).astype(np.float32)
    gallery = base[rng.integers(0, 6, size=120)] + rng.normal(scale=1e-7, size=(120, 32)).astype(np.float32)
    return rng.normal(size=(9, 32)).astype(np.float32), gallery.astype(np.float32)


def random_rows(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = 0.1 + 5 * rng.random((260, 1))
    rows = (rng.normal(size=(260, 24)) * scale).astype(np.float32)
    return rows[:20], rows[20:]


def assert_same_ranking(indices, scores, reference, exact: bool) -> None:
    """``indices``/``scores`` rank as ``reference`` (torch ``Matches``) does: exactly where the scores are
    exact; elsewhere a swapped pair must be a pair whose scores agree within the tolerance."""
    ref_indices, ref_scores = reference.indices.numpy(), reference.scores.numpy()
    indices, scores = np.asarray(indices), np.asarray(scores)
    if exact:
        np.testing.assert_array_equal(indices, ref_indices)
        np.testing.assert_array_equal(scores, ref_scores)
        return
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=SCORE_TOLERANCE)
    for q, j in zip(*np.nonzero(indices != ref_indices)):
        assert abs(float(ref_scores[q, j]) - float(scores[q, j])) <= SCORE_TOLERANCE


def brute_force_order(query: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """float64 cosine ranking, ties by smaller gallery index (exact for ``exact_ties`` data)."""
    q = query / np.linalg.norm(query.astype(np.float64), axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery.astype(np.float64), axis=1, keepdims=True)
    return np.argsort(-(q @ g.T), axis=1, kind="stable")[:, :k]


# ---------------------------------------------------------------------------------- the numpy search in-process
@pytest.mark.parametrize("chunk_size", [1, 4, 13, None])
@pytest.mark.parametrize("make,exact", [(exact_ties, True), (near_ties, False), (random_rows, False)])
def test_numpy_search_ranks_as_the_torch_search(make, exact, chunk_size):
    query, gallery = make(0)
    for k in (1, 5, 17):
        ours = match_arrays_numpy(query, gallery, k, chunk_size=chunk_size, query_chunk_size=4)
        theirs = match_arrays(torch.from_numpy(query), torch.from_numpy(gallery), k, chunk_size=chunk_size)
        assert ours.indices.dtype == np.int64 and ours.scores.dtype == np.float32
        assert_same_ranking(ours.indices, ours.scores, theirs, exact)
        if exact:
            np.testing.assert_array_equal(ours.indices, brute_force_order(query, gallery, k))


def test_numpy_search_rescales_and_refuses_rows_as_the_torch_search():
    query, gallery = random_rows(1)
    wide = gallery.astype(np.float64)
    wide[3] *= 1e300  # overflows float32 unless rescaled in float64 first
    wide[5] *= 1e-300
    ours = match_arrays_numpy(query, wide, 6, first_row=100)
    assert_same_ranking(ours.indices, ours.scores, match_arrays(query, wide, 6, first_row=100), exact=False)
    half = gallery.astype(np.float16)
    ours = match_arrays_numpy(query, half, 6, chunk_size=50)
    assert_same_ranking(ours.indices, ours.scores, match_arrays(query, half, 6, screen=False), exact=False)
    for bad, message in ((np.nan, "gallery row 7 contains NaN"), (0.0, "gallery row 7 is all zeros")):
        broken = gallery.copy()
        broken[7] = bad
        for search in (match_arrays_numpy, match_arrays):
            with pytest.raises(ValueError, match=message):
                search(query, broken, 3, chunk_size=4)
    for search in (match_arrays_numpy, match_arrays):
        with pytest.raises(TypeError, match="query embeddings are float16 but the gallery is float32"):
            search(query.astype(np.float16), gallery, 3)
    assert gallery[7].any()  # refusing a row never wrote into the caller's array


def test_numpy_search_answers_empty_queries_and_a_gallery_smaller_than_k():
    query, gallery = random_rows(2)
    empty = match_arrays_numpy(query[:0], gallery, 5)
    assert empty.indices.shape == empty.scores.shape == (0, 5)
    small = match_arrays_numpy(query[0], gallery[:3], 10)
    assert small.indices.shape == (1, 3) and small.to_list()[0][0][0] == int(small.indices[0, 0])


# ---------------------------------------------------------------------------------------------- without torch
@pytest.mark.parametrize("make,exact", [(exact_ties, True), (near_ties, False), (random_rows, False)])
def test_match_runs_without_torch_and_ranks_as_the_torch_path(make, exact, tmp_path):
    query, gallery = make(3)
    np.save(tmp_path / "q.npy", query)
    np.save(tmp_path / "g.npy", gallery)
    run = _torch_free(MATCH_SCRIPT, str(tmp_path / "q.npy"), str(tmp_path / "g.npy"), "7")
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert found.pop("torch modules") == []
    assert found.pop("nan") == f"gallery row {len(gallery)} contains NaN or infinite values; " + (
        "check the embeddings that produced it"
    )
    assert "needs PyTorch" in found.pop("folder")
    reference = csdn.match(query, gallery, topk=7)  # the torch path
    for result in found.values():
        assert_same_ranking(result["indices"], np.float32(result["scores"]), reference, exact)


CLI_SCRIPT = (
    NO_TORCH + "import runpy\nsys.argv = ['csdn', *sys.argv[1:]]\nrunpy.run_module('csdn', run_name='__main__')\n"
)


def test_the_command_line_helps_and_fails_in_one_line_without_torch():
    commands = list(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr,arg-type]
    listing = _torch_free(CLI_SCRIPT, "--help")
    assert listing.returncode == 0, listing.stderr
    for name in commands:
        assert f"    {name}" in listing.stdout
    assert _torch_free(CLI_SCRIPT, "--version").stdout.startswith("csdn-reid ")
    for name in commands:  # each command's own help, its options included, without torch
        helped = _torch_free(CLI_SCRIPT, name, "--help")
        assert helped.returncode == 0 and helped.stdout.startswith(f"usage: csdn {name}"), (name, helped.stderr)
        assert "--debug" in helped.stdout
    embed_help = _torch_free(CLI_SCRIPT, "embed", "--help").stdout
    assert "{fp32,bf16}" in embed_help and "{float32,float16,bfloat16}" in embed_help  # choices read torch-free
    for argv in (
        ["train", "--dataset", "sysu", "--root", "r", "--output", "o"],
        ["embed", "a.png", "--output", "x.npy", "--model", "m", "--modality", "visible"],
    ):
        run = _torch_free(CLI_SCRIPT, *argv)
        assert run.returncode == 2 and run.stdout == ""
        assert run.stderr == (
            f"csdn: error: csdn {argv[0]} needs PyTorch, which is not installed here: pip install torch "
            "(https://pytorch.org/get-started/locally/)\n"
        ), run.stderr
    typo = _torch_free(CLI_SCRIPT, "eval", "--debug-typo")
    assert (
        typo.returncode == 2
        and typo.stderr.count("\n") == 1
        and "eval: the following arguments are required" in typo.stderr
    )
    unknown = _torch_free(CLI_SCRIPT, "bogus")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "invalid choice: 'bogus'" in unknown.stderr


def test_every_command_module_is_registered():
    registered = {parser.prog.split()[1] for parser in build_parser()._subparsers._group_actions[0].choices.values()}  # type: ignore[union-attr]
    assert {name.replace("_", "-") for name in COMMAND_MODULES} <= registered
