"""A gallery made ready for many searches: the bfloat16 screen's inputs computed once.

Each call of :func:`csdn.match` on a plain float32 or float16 gallery spends about as long turning
the rows into the screen's bfloat16 copy and computing their norms as it spends on the screen's
product itself (see ``benchmarks/bench_match.py``). A gallery searched again and again (a
service answering query batches, an evaluation sweep) can pay that once: ``PreparedGallery``
keeps the copy and the norms, chunk by chunk, beside the rows, and ``match`` then only multiplies,
screens and re-scores. The answer is the same exact float32 top-k, because the kept chunks are
the very ones a plain call would compute.

Memory: the rows are referenced, not copied (see the class for one exception); the bfloat16 copy adds half the size of a float32
gallery (the size of a float16 one; nothing for a bfloat16 gallery, whose rows are the copy).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from csdn.retrieval.checks import CHUNK_BYTES, check_gallery, positive_int
from csdn.retrieval.rows import ArrayLike
from csdn.retrieval.screening import ScratchBuffers, screen_chunks

__all__ = ["PreparedGallery"]

Chunk = tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]  # (first row, rows as stored, bfloat16 rows, norms)


class PreparedGallery:
    """``rows`` ``[G, D]`` (tensor or numpy array, float32 or half precision) with the screen's
    bfloat16 copy and norms, for :func:`csdn.match` and :func:`~csdn.retrieval.exact.match_arrays`.

    Rows are checked here as a search would check them (NaN/inf or all-zero rows are refused,
    naming the row). The rows must not change afterwards: a tensor changed in place is noticed
    (its version counter moved) and refused at the next search; writes to a numpy array cannot be
    seen, so prepare the gallery again after changing one.

    Args:
        rows: the gallery, kept by reference (a numpy array that is not contiguous, or not float16/float32,
            is kept as the copy a search would read it into).
        chunk_size: rows per chunk (default: 128 MiB of float32 rows, as ``match`` uses).
        progress: a tqdm bar while preparing.
    """

    def __init__(self, rows: ArrayLike, *, chunk_size: int | None = None, progress: bool = False) -> None:
        self.rows = rows
        _, dim = check_gallery(rows)
        self.chunk_size = positive_int(chunk_size, "chunk_size") or max(1, CHUNK_BYTES // (4 * dim))
        self._count_when_prepared = _in_place_count(rows)
        with tqdm(total=self.shape[0], disable=not progress, desc="prepare gallery", unit="row") as bar:
            self._chunks: list[Chunk] = []
            for chunk in _prepared_chunks(rows, self.chunk_size):
                self._chunks.append(chunk)
                bar.update(len(chunk[1]))

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.rows.shape[0]), int(self.rows.shape[1]))

    @property
    def ndim(self) -> int:
        return 2

    @property
    def dtype(self) -> torch.dtype | object:
        return self.rows.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"PreparedGallery({self.shape[0]} x {self.shape[1]} {self.dtype}, {len(self._chunks)} chunks)"

    def chunks(self, progress: bool = False, desc: str = "match", first_row: int = 0) -> Iterator[Chunk]:
        """The kept chunks, in :func:`~csdn.retrieval.screening.screen_chunks`' shape; refused if the rows
        changed since they were prepared."""
        if _in_place_count(self.rows) != self._count_when_prepared:
            raise ValueError(
                "the gallery's rows were changed in place after PreparedGallery was made from them, so its bfloat16 "
                "copy is stale; make a new PreparedGallery(rows)"
            )
        with tqdm(total=self.shape[0], disable=not progress, desc=desc, unit="row") as bar:
            for start, stored, narrow, norms in self._chunks:
                yield first_row + start, stored, narrow, norms
                bar.update(len(stored))


def _prepared_chunks(rows: ArrayLike, chunk_size: int) -> Iterator[Chunk]:
    """screen_chunks' chunks, each in storage of its own (a search reuses one scratch copy for all)."""
    for start in range(0, rows.shape[0], chunk_size):
        chunk = rows[start : start + chunk_size]
        for _, stored, narrow, norms in screen_chunks(chunk, chunk_size, False, "", start, ScratchBuffers()):
            yield start, stored, narrow, norms


def _in_place_count(rows: ArrayLike) -> int | None:
    """The in-place modification counter of a tensor (None for numpy arrays, which have none)."""
    return int(rows._version) if isinstance(rows, torch.Tensor) else None
