"""The argument and row checks every search shares, written without torch: the numpy search
(:mod:`csdn.retrieval.exact_numpy`) runs where torch is not installed, and the torch search
(:mod:`csdn.retrieval.rows`) refuses and rescales rows by these same rules and messages.

An object can only be a torch tensor if torch was imported already, so tensors are recognised
through ``sys.modules`` without importing torch here.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = [
    "STORAGE_DTYPE_NAMES",
    "CHUNK_BYTES",
    "HALF_DTYPE_NAMES",
    "SAFE_NORM_RANGE",
    "UNIT_NORM_TOLERANCE",
    "bad_row_error",
    "check_array",
    "check_dtypes",
    "check_gallery",
    "check_topk",
    "dtype_name",
    "is_half",
    "is_tensor",
    "positive_int",
    "rescale_rows",
    "torch_installed",
]

# Sizes chosen automatically: float32 bytes of one gallery chunk and of one query x
# gallery score block. Small enough to bound memory (a float32 chunk of a tensor or
# memmap is a view, not a copy), large enough that few, large operations run per chunk.
CHUNK_BYTES = 128 * 2**20
# Rows whose L2 norm is this close to 1 count as unit rows and are used as they are:
# float32 normalisation leaves norms within ~5e-7 of 1 at D=6144, and a relative error of
# this size is below the rounding of a float32 dot product over thousands of terms.
UNIT_NORM_TOLERANCE = 2e-6
# Rows whose float32 norm falls outside this range (or is NaN/inf) are rescaled by their
# largest absolute value, in their own precision, before the float32 cast and the norm:
# rows scaled by 1e-30 would otherwise square to zero ("all zeros") and float64 rows of
# 1e300 would overflow float32 to inf. Cosine similarity does not change with scale.
SAFE_NORM_RANGE = (1e-12, 1e12)
HALF_DTYPE_NAMES = ("float16", "bfloat16")
STORAGE_DTYPE_NAMES = ("float32", *HALF_DTYPE_NAMES)  # how an embeddings file may store its rows


def torch_installed() -> bool:
    """Whether torch can be imported here (importing it: the caller is about to use it)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


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
    tensor = is_tensor(array)
    if not tensor and not isinstance(array, np.ndarray):
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy array, got {type(array).__name__}; "
            "convert it with torch.as_tensor(...) or np.asarray(...)"
        )
    if tensor and array.is_meta:
        raise TypeError(f"{name} is a tensor on the 'meta' device: it has a shape but no values; pass real embeddings")
    floating = array.is_floating_point() if tensor else array.dtype.kind == "f"
    if not floating:
        raise TypeError(f"{name} must hold floating-point embeddings, got dtype {array.dtype}")
    if array.ndim not in ndims:
        shapes = " or ".join({1: "[D]", 2: "[N, D]"}[n] for n in ndims)
        raise ValueError(f"{name} must have shape {shapes}, got {list(array.shape)}")


def dtype_name(array: Any) -> str:
    """``"float32"``, ``"float16"``, ``"bfloat16"`` or ``"float64"`` (numpy: any other float is used as float64)."""
    if is_tensor(array):
        return str(array.dtype).removeprefix("torch.")
    native = array.dtype.newbyteorder("=")
    return native.name if native in (np.dtype(np.float16), np.dtype(np.float32)) else "float64"


def is_half(array: Any) -> bool:
    return dtype_name(array) in HALF_DTYPE_NAMES


def check_dtypes(query: Any, gallery: Any) -> None:
    """A half-precision query must be of the gallery's dtype (full-precision queries go with any gallery)."""
    query_dtype, gallery_dtype = dtype_name(query), dtype_name(gallery)
    if query_dtype in HALF_DTYPE_NAMES and query_dtype != gallery_dtype:
        raise TypeError(
            f"query embeddings are {query_dtype} but the gallery is {gallery_dtype}: pass float32 queries "
            "(they go with any gallery), or store both sides with the same --dtype"
        )


def check_gallery(gallery: Any, dim: int | None = None) -> tuple[int, int]:
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
    return int(num), int(gallery_dim)


def rescale_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows divided by their largest absolute value in their own precision, as float32; with per-row
    flags (all finite, not all zeros). Rows failing either flag are left unscaled."""
    with np.errstate(all="ignore"):
        all_finite = np.isfinite(values).all(axis=1)
        peak = np.abs(values).max(axis=1) if values.shape[1] else np.zeros(len(values), values.dtype)
        divisor = np.where(all_finite & (peak > 0), peak, 1)
        rescaled = np.ascontiguousarray(values / divisor[:, None], dtype=np.float32)
    return rescaled, all_finite, peak > 0


def bad_row_error(name: str, row_id: int, finite: bool) -> ValueError:
    """The refusal of a row that cannot be scaled to unit length."""
    problem = "is all zeros, so its cosine similarity is undefined" if finite else "contains NaN or infinite values"
    return ValueError(f"{name} row {row_id} {problem}; check the embeddings that produced it")
