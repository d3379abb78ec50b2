"""Turning user arrays into rows a search can trust: argument checks, float32 rows with their norms,
and the rescue of rows of extreme scale (NaN/inf and all-zero rows are refused, naming the row).

Shared by the exact search, the bfloat16 screen and ``FaissIndex`` so that every path refuses
and rescales the same rows the same way.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = [
    "ArrayLike",
    "CHUNK_BYTES",
    "HALF_DTYPES",
    "SAFE_NORM_RANGE",
    "UNIT_NORM_TOLERANCE",
    "as_tensor",
    "check_array",
    "check_dtypes",
    "check_gallery",
    "check_topk",
    "float32_rows",
    "gallery_chunks",
    "is_half",
    "positive_int",
    "prepare_queries",
    "torch_dtype",
]

ArrayLike = torch.Tensor | np.ndarray
HALF_DTYPES = (torch.float16, torch.bfloat16)

# Sizes chosen automatically: float32 bytes of one gallery chunk and of one query x
# gallery score block. Small enough to bound memory (a float32 chunk of a tensor or
# memmap is a view, not a copy), large enough that few, large operations run per chunk.
CHUNK_BYTES = 128 * 2**20
# Rows whose L2 norm is this close to 1 count as unit rows and are used as they are:
# float32 normalisation leaves norms within ~5e-7 of 1 at D=6144, and a relative error of
# this size is below the rounding of a float32 dot product over thousands of terms.
UNIT_NORM_TOLERANCE = 2e-6


def check_topk(topk: int) -> int:
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)):
        raise TypeError(f"topk must be an int, got {type(topk).__name__}")
    if topk < 1:
        raise ValueError(f"topk must be at least 1, got {topk}")
    return int(topk)


def positive_int(value: int | None, name: str) -> int | None:
    """``value`` as an int, or None (meaning: choose automatically)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int or None (automatic), got {value!r}")
    return int(value)


def check_array(array: Any, name: str, ndims: tuple[int, ...]) -> None:
    if not isinstance(array, (torch.Tensor, np.ndarray)):
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy array, got {type(array).__name__}; "
            "convert it with torch.as_tensor(...) or np.asarray(...)"
        )
    if isinstance(array, torch.Tensor) and array.is_meta:
        raise TypeError(f"{name} is a tensor on the 'meta' device: it has a shape but no values; pass real embeddings")
    floating = array.is_floating_point() if isinstance(array, torch.Tensor) else array.dtype.kind == "f"
    if not floating:
        raise TypeError(f"{name} must hold floating-point embeddings, got dtype {array.dtype}")
    if array.ndim not in ndims:
        shapes = " or ".join({1: "[D]", 2: "[N, D]"}[n] for n in ndims)
        raise ValueError(f"{name} must have shape {shapes}, got {list(array.shape)}")


_NUMPY_DTYPES = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}


def torch_dtype(array: ArrayLike) -> torch.dtype:
    """The torch dtype of a tensor, or of a numpy array's elements (float64 for any wider float)."""
    if isinstance(array, torch.Tensor):
        return array.dtype
    return _NUMPY_DTYPES.get(array.dtype.newbyteorder("="), torch.float64)


def is_half(array: ArrayLike) -> bool:
    return torch_dtype(array) in HALF_DTYPES


def check_dtypes(query: ArrayLike, gallery: ArrayLike) -> None:
    """A half-precision query must be of the gallery's dtype (full-precision queries go with any gallery)."""
    query_dtype, gallery_dtype = torch_dtype(query), torch_dtype(gallery)
    if query_dtype in HALF_DTYPES and query_dtype != gallery_dtype:
        raise TypeError(
            f"query embeddings are {str(query_dtype).removeprefix('torch.')} but the gallery is "
            f"{str(gallery_dtype).removeprefix('torch.')}: pass float32 queries (they go with any gallery), "
            "or store both sides with the same --dtype"
        )


def check_gallery(gallery: ArrayLike, dim: int | None = None) -> tuple[int, int]:
    """``(G, D)`` of a usable gallery; ``dim`` is the query width it must equal, if known."""
    check_array(gallery, "gallery", (2,))
    num, gallery_dim = gallery.shape
    if num == 0:
        raise ValueError("gallery is empty: there is nothing to match against")
    if dim is not None and gallery_dim != dim:
        raise ValueError(
            f"query rows have {dim} dimensions but gallery rows have {gallery_dim}: embed both with the "
            "same model and the same flip setting (flip=True doubles the width)"
        )
    return num, gallery_dim


# Rows whose float32 norm falls outside this range (or is NaN/inf) are rescaled by their
# largest absolute value, in their own precision, before the float32 cast and the norm:
# rows scaled by 1e-30 would otherwise square to zero ("all zeros") and float64 rows of
# 1e300 would overflow float32 to inf. Cosine similarity does not change with scale.
SAFE_NORM_RANGE = (1e-12, 1e12)


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
    values = np.asarray(block[picked.cpu().numpy()])
    with np.errstate(all="ignore"):
        all_finite = np.isfinite(values).all(axis=1)
        peak = np.abs(values).max(axis=1) if values.shape[1] else np.zeros(len(values), values.dtype)
        divisor = np.where(all_finite & (peak > 0), peak, 1)
        rescaled = np.ascontiguousarray(values / divisor[:, None], dtype=np.float32)
    rows = torch.from_numpy(rescaled).to(picked.device)
    return rows, torch.from_numpy(all_finite).to(picked.device), torch.from_numpy(peak > 0).to(picked.device)


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
            if not bool(finite[first]):
                problem = "contains NaN or infinite values"
            else:
                problem = "is all zeros, so its cosine similarity is undefined"
            row_id = row_ids + row if isinstance(row_ids, int) else int(row_ids[row])
            raise ValueError(f"{name} row {row_id} {problem}; check the embeddings that produced it")
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
