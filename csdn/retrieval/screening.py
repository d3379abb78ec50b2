"""Exact top-k with a bfloat16 screen: a fast low-precision product picks candidates, float32 decides.

On hardware with bfloat16 matrix units (CPUs with AVX512-BF16 or AMX, CUDA GPUs) a bfloat16
product runs two to three times faster than a float32 one. Its scores are off by a bounded
amount, so it is used only to rule rows out: a gallery row is re-scored in float32 unless the
screen proves it cannot reach the k-th best float32 score. The answer is therefore exactly the
float32 one, whatever the data; near-ties only cost more re-scoring.

The bound (per query, for a screened cosine ``c = screened product / n`` of a row whose norm ``n``
was computed in the row's storage dtype, within relative ``e_n`` of the true norm)::

    |c - exact| <= A_q + B * |c|
    A_q = |q - bf16(q)|  +  (1 + u) * u_g  +  3.1 * gamma_D  +  1e-6      (q unit, float32)
    B   = u / (1 - u) * (1 + e_n) + e_n                                       (u = 2**-8)

- ``|q - bf16(q)|``: the query's own rounding, measured (Cauchy-Schwarz with ``|g| / n = 1``);
- ``u_g``: the gallery's rounding to bfloat16 (0 when it is stored as bfloat16, else ``u``);
- ``gamma_D = D u32 / (1 - D u32)``: float32 accumulation of D exact bfloat16 products, in any
  order, in the screen (twice over, for units that truncate instead of rounding) and once in the
  float32 re-score (``u32 = 2**-24``);
- ``B |c|``: the product's result is rounded to bfloat16 (round to nearest), relative ``u``, and
  divided by a norm that is off by at most ``e_n`` = half an epsilon of the storage dtype (the
  norm is accumulated in float32, then rounded) plus ``gamma_D``;
- ``1e-6``: the divisions by ``n``, the float32 norm's own rounding and products flushed to zero
  (each below ``2**-126``), all orders of magnitude smaller.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from csdn.retrieval.checks import SAFE_NORM_RANGE, UNIT_NORM_TOLERANCE
from csdn.retrieval.rows import ArrayLike, as_tensor, float32_rows
from csdn.system.device import cpu_has_bf16

__all__ = [
    "BF16_UNIT_ROUNDOFF",
    "ScratchBuffers",
    "bf16_is_fast",
    "candidates",
    "gather_rows",
    "rescored",
    "screen_chunks",
    "screen_slack",
]

BF16_UNIT_ROUNDOFF = 2.0**-8  # bfloat16 keeps 8 significant bits; round to nearest
_FP32_UNIT_ROUNDOFF = 2.0**-24
_ABSOLUTE_SLACK = 1e-6


def bf16_is_fast(device: torch.device) -> bool:
    """Whether a bfloat16 matrix product beats a float32 one on ``device`` (bf16 units present)."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_has_bf16()


def screen_slack(queries: torch.Tensor, gallery_dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    """``(A [Q], B)`` of the module's bound for unit float32 ``queries`` against rows of ``gallery_dtype``
    whose norms were computed in that dtype."""
    u = BF16_UNIT_ROUNDOFF
    dim = queries.shape[1]
    gamma = dim * _FP32_UNIT_ROUNDOFF / (1 - dim * _FP32_UNIT_ROUNDOFF)
    query_error = torch.linalg.vector_norm(queries - queries.bfloat16().float(), dim=1) * (1 + 1e-5)
    gallery_error = 0.0 if gallery_dtype == torch.bfloat16 else u
    norm_error = torch.finfo(gallery_dtype).eps / 2 + gamma
    slack = query_error + (1 + u) * gallery_error + 3.1 * gamma + _ABSOLUTE_SLACK
    return slack, u / (1 - u) * (1 + norm_error) + norm_error


def candidates(
    screened: torch.Tensor,
    kth_best: torch.Tensor,
    slack: torch.Tensor,
    relative: float,
    k: int,
    buffers: ScratchBuffers | None = None,
) -> torch.Tensor:
    """``[M, 2]`` (query, column) pairs of the rows that may still enter the top ``k``, in row-major order.

    ``screened`` holds the screen's cosines of this chunk, ``kth_best`` the float32 k-th best
    score so far per query (``-inf`` while fewer than ``k`` rows were seen). While a query has
    no k-th best yet, the chunk's own k screened-best rows stand in: they score at least
    ``T - A - B|T|`` in float32 (``T`` their k-th screened value; ``c - B|c|`` grows with ``c``),
    so the k-th best overall is at least that ``floor``. A row is out when even its highest
    possible float32 score ``c + A + B|c|`` lies below ``floor``; as that grows with ``c``, this
    is one comparison of ``c`` with a per-query threshold. Most queries have no candidate in
    most chunks, so only the rows whose maximum reaches the threshold are searched.
    """
    floor = kth_best
    if screened.shape[1] >= k and bool(torch.isinf(kth_best).any()):
        chunk_kth = torch.topk(screened, k, dim=1).values[:, k - 1]
        floor = torch.maximum(floor, chunk_kth - slack - relative * chunk_kth.abs())
    need = floor - slack  # solve c + B|c| = need for c
    threshold = torch.where(need >= 0, need / (1 + relative), need / (1 - relative))
    threshold = threshold - _ABSOLUTE_SLACK * (1 + threshold.abs())  # the solution's own rounding: keep more
    reached = (screened.amax(dim=1) >= threshold).nonzero().squeeze(1)
    rows = gather_rows(screened, reached, buffers, "reached")
    pairs = (rows >= threshold.index_select(0, reached).unsqueeze(1)).nonzero()
    pairs[:, 0] = reached[pairs[:, 0]]
    return pairs


def gather_rows(source: torch.Tensor, index: torch.Tensor, buffers: ScratchBuffers | None, name: str) -> torch.Tensor:
    """``source[index]`` along rows, copied row by row into reused scratch memory when ``buffers`` is given.

    Advanced indexing allocates a fresh tensor each call, and on a virtual machine the page
    faults of first touching it cost more than the copy; ``index_select`` into storage kept
    from the previous chunk avoids both.
    """
    if buffers is None:
        return source.index_select(0, index)
    out = buffers.rows(name, len(index), source.shape[1:], source.dtype, source.device)
    return torch.index_select(source, 0, index, out=out)


def rescored(
    queries: torch.Tensor, rows: torch.Tensor, pairs: torch.Tensor, buffers: ScratchBuffers | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 cosines of (query, row) ``pairs`` ``[M, 2]`` of a chunk (row-major), per query in column order,
    padded with ``-inf`` (which never outranks a real score) to the longest list; with the columns.

    Each pair is scored by the same batched dot product and each row's norm is computed on its
    own, so a pair's score does not depend on its chunk or on the other candidates: identical
    rows tie exactly, as the documented tie order needs.
    """
    picked = gather_rows(rows, pairs[:, 1], buffers, "picked").to(torch.float32)
    norms = torch.linalg.vector_norm(picked, dim=1)
    norms = torch.where((norms - 1).abs() <= UNIT_NORM_TOLERANCE, 1.0, norms)
    scores = torch.einsum("md,md->m", picked, gather_rows(queries, pairs[:, 0], buffers, "paired queries")) / norms
    counts = torch.bincount(pairs[:, 0], minlength=len(queries))
    width = max(1, int(counts.max()))
    slot = torch.arange(len(pairs), device=pairs.device) - (torch.cumsum(counts, 0) - counts)[pairs[:, 0]]
    cand_scores = torch.full((len(queries), width), -math.inf, device=queries.device)
    cand_indices = torch.full((len(queries), width), -1, dtype=torch.int64, device=queries.device)
    cand_scores[pairs[:, 0], slot] = scores
    cand_indices[pairs[:, 0], slot] = pairs[:, 1]
    return cand_scores, cand_indices


class ScratchBuffers:
    """Scratch tensors reused from chunk to chunk (valid until the next ``get`` of the same name)."""

    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}

    def get(
        self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        tensor = self._tensors.get(name)
        if tensor is None or tensor.shape != shape or tensor.dtype != dtype or tensor.device != torch.device(device):
            tensor = self._tensors[name] = torch.empty(shape, dtype=dtype, device=device)
        return tensor

    def rows(
        self, name: str, count: int, row_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """A ``[count, *row_shape]`` view of storage that grows by doubling, for row counts that vary per chunk."""
        tensor = self._tensors.get(name)
        same_kind = (
            tensor is not None
            and tensor.shape[1:] == row_shape
            and tensor.dtype == dtype
            and tensor.device == torch.device(device)
        )
        if tensor is None or not same_kind or tensor.shape[0] < count:
            capacity = max(count, 2 * tensor.shape[0]) if tensor is not None and same_kind else count
            tensor = self._tensors[name] = torch.empty((capacity, *row_shape), dtype=dtype, device=device)
        return tensor[:count]


def screen_chunks(
    gallery: ArrayLike, chunk_size: int, progress: bool, desc: str, first_row: int, buffers: ScratchBuffers
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
            stored = block.detach() if isinstance(block, torch.Tensor) else as_tensor(block)
            narrow, norms = _narrowed(stored, buffers)
            low, high = max(SAFE_NORM_RANGE[0], torch.finfo(stored.dtype).tiny), SAFE_NORM_RANGE[1]
            if not bool(((norms >= low) & (norms <= high)).all()):  # (norms below ``tiny`` lose precision)
                stored, norms = float32_rows(block, "gallery", first_row + start)
                narrow, _ = _narrowed(stored, buffers)
            yield first_row + start, stored, narrow, norms
            bar.update(len(stored))


_BLOCK_ROWS = 256  # rows converted at a time: 3 MiB of float32 at D = 3072, still in cache


def _narrowed(stored: torch.Tensor, buffers: ScratchBuffers) -> tuple[torch.Tensor, torch.Tensor]:
    """``stored`` rows in bfloat16 for the screen, and their float32 norms.

    Rows are taken a block at a time, and each block yields its norms and its bfloat16 copy while
    it is in cache: one pass over the chunk instead of two (3% on a float32 search on Zen 4).
    float16 has no direct fast path to bfloat16 on CPUs, and a norm of float16 rows is slow too,
    so float16 blocks are first widened into float32 scratch (norms exact to float32, within the
    bound's allowance for norms rounded to the storage dtype).
    """
    if stored.dtype == torch.bfloat16:
        return stored, torch.linalg.vector_norm(stored, dim=1).float()
    narrow = buffers.get("narrow", tuple(stored.shape), torch.bfloat16)
    if stored.dtype not in (torch.float32, torch.float16):  # float64: converted directly, not via float32
        return narrow.copy_(stored), torch.linalg.vector_norm(stored, dim=1).float()
    norms = buffers.get("norms", (len(stored),), torch.float32)
    wide = buffers.get("wide", (_BLOCK_ROWS, *stored.shape[1:]), torch.float32)
    for start in range(0, len(stored), _BLOCK_ROWS):
        block = stored[start : start + _BLOCK_ROWS]
        rows = wide[: len(block)].copy_(block) if block.dtype == torch.float16 else block
        torch.linalg.vector_norm(rows, dim=1, out=norms[start : start + len(block)])
        narrow[start : start + len(block)].copy_(rows)
    return narrow, norms
