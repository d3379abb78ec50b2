"""Turning user arrays into torch rows a search can trust: float32 rows with their norms, and the
rescue of rows of extreme scale (NaN/inf and all-zero rows are refused, naming the row).

Shared by the exact search, the bfloat16 screen and ``FaissIndex`` so that every torch path refuses
and rescales the same rows the same way; the rules and messages themselves are
:mod:`csdn.retrieval.checks`, which the numpy search uses too.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from csdn.retrieval.checks import SAFE_NORM_RANGE, UNIT_NORM_TOLERANCE, bad_row_error, check_array, rescale_rows

__all__ = ["ArrayLike", "HALF_DTYPES", "as_tensor", "float32_rows", "gallery_chunks", "prepare_queries", "torch_dtype"]

ArrayLike = torch.Tensor | np.ndarray
HALF_DTYPES = (torch.float16, torch.bfloat16)
_NUMPY_DTYPES = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}


def torch_dtype(array: ArrayLike) -> torch.dtype:
    """The torch dtype of a tensor, or of a numpy array's elements (float64 for any wider float)."""
    if isinstance(array, torch.Tensor):
        return array.dtype
    return _NUMPY_DTYPES.get(array.dtype.newbyteorder("="), torch.float64)


def _as_float32(block: ArrayLike) -> torch.Tensor:
    """A float32 tensor of ``block``, sharing memory when it already is float32 and contiguous."""
    if isinstance(block, torch.Tensor):
        return block.detach().to(torch.float32)
    if block.dtype != np.float32 or not block.flags.c_contiguous:
        with np.errstate(over="ignore", under="ignore"):  # out-of-range rows are redone by float32_rows
            block = np.ascontiguousarray(block, dtype=np.float32)
    with warnings.catch_warnings():
        # A read-only memmap is shared, not copied; nothing here ever writes to it.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(block)


def _rescaled_rows(block: ArrayLike, picked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``picked`` of ``block`` divided by their largest absolute value, computed in the
    input's own precision, as float32; with per-row flags (finite, nonzero)."""
    if isinstance(block, torch.Tensor):
        original = block.detach()[picked.to(block.device)]
        finite = torch.isfinite(original).all(dim=1)
        scale = original.abs().amax(dim=1)
        usable = finite & (scale > 0)
        scaled = original / torch.where(usable, scale, torch.ones_like(scale)).unsqueeze(1)
        return scaled.to(torch.float32).to(picked.device), finite.to(picked.device), (scale > 0).to(picked.device)
    rescaled, all_finite, nonzero = rescale_rows(np.asarray(block[picked.cpu().numpy()]))
    rows = torch.from_numpy(rescaled).to(picked.device)
    return rows, torch.from_numpy(all_finite).to(picked.device), torch.from_numpy(nonzero).to(picked.device)


def float32_rows(block: ArrayLike, name: str, row_ids: int | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``block`` as float32 rows with their L2 norms (exactly 1 for unit rows), refusing rows
    that cannot be scaled to unit length: NaN/inf values or all zeros.

    Rows of extreme scale (norm outside ``SAFE_NORM_RANGE`` in float32) are first divided by
    their largest absolute value in the input's precision, which leaves their cosine
    similarities unchanged. ``row_ids`` names rows in errors: the input row number of
    ``block[0]``, or of every row.
    """
    rows = _as_float32(block)
    norms = torch.linalg.vector_norm(rows, dim=1)
    low, high = SAFE_NORM_RANGE
    unsafe = ~((norms >= low) & (norms <= high))
    if bool(unsafe.any()):
        picked = unsafe.nonzero().squeeze(1)
        scaled, finite, nonzero = _rescaled_rows(block, picked)
        bad = ~(finite & nonzero)
        if bool(bad.any()):
            first = int(bad.nonzero()[0, 0])
            row = int(picked[first])
            row_id = row_ids + row if isinstance(row_ids, int) else int(row_ids[row])
            raise bad_row_error(name, row_id, bool(finite[first]))
        rows = rows.clone()  # never write into the caller's tensor or a shared memmap
        norms = norms.clone()
        rows[picked] = scaled
        norms[picked] = torch.linalg.vector_norm(scaled, dim=1)
    norms = torch.where((norms - 1).abs() <= UNIT_NORM_TOLERANCE, 1.0, norms)
    return rows, norms


def prepare_queries(query: ArrayLike) -> torch.Tensor:
    """Queries as a float32 ``[Q, D]`` tensor with unit rows (one vector ``[D]`` -> ``[1, D]``)."""
    check_array(query, "query", (1, 2))
    if query.ndim == 1:
        query = query[None]
    if query.shape[1] == 0:
        raise ValueError("query rows have 0 dimensions")
    rows, norms = float32_rows(query, "query", 0)
    return rows / norms.unsqueeze(1)


def gallery_chunks(
    gallery: ArrayLike, chunk_size: int, progress: bool, desc: str, first_row: int = 0
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(row number, float32 rows, the same, row norms)`` chunk by chunk, validating as it
    reads; rows are numbered from ``first_row`` (the shape of :func:`screen_chunks`)."""
    num = gallery.shape[0]
    with tqdm(total=num, disable=not progress, desc=desc, unit="row") as bar:
        for start in range(0, num, chunk_size):
            block = gallery[start : start + chunk_size]
            rows, norms = float32_rows(block, "gallery", first_row + start)
            yield first_row + start, rows, rows, norms
            bar.update(rows.shape[0])


def as_tensor(block: np.ndarray) -> torch.Tensor:
    """A numpy block as a tensor in its own precision when torch has it (float16/32), else float32."""
    if block.dtype in (np.float16, np.float32) and block.dtype.isnative:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(np.ascontiguousarray(block))
    return _as_float32(block)
