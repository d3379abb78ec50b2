"""The safetensors format, written byte-reproducibly and read back with a strict header check.

Written here rather than by safetensors' own writer so that saving the same weights
twice gives the same bytes (and SHA-256); read with a full check of the header, so a
truncated download or a foreign file is caught before any tensor is read.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from csdn.errors import WeightsError

MAX_HEADER_BYTES = 100 * 1024 * 1024
# torch dtype -> safetensors dtype name, for the dtypes a CSDN state dict can hold
DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
DTYPE_BYTES = {name: dtype.itemsize for dtype, name in DTYPE_NAMES.items()}
FLOAT_DTYPES = {name for dtype, name in DTYPE_NAMES.items() if dtype.is_floating_point}


def write_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Write a safetensors file whose bytes depend only on ``tensors`` and ``metadata``.

    safetensors' own writer puts the metadata keys in random order, so saving the same
    model twice gave files with different SHA-256s; here the metadata keys are sorted and
    tensors ordered by (element size, largest first, then name), which also keeps every
    tensor aligned to its element size. Each tensor's bytes are copied out on their own,
    so tensors that share memory are fine.
    """
    ordered = sorted(tensors.items(), key=lambda item: (-item[1].element_size(), item[0]))
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    for name, tensor in ordered:
        if tensor.dtype not in DTYPE_NAMES:
            raise ValueError(f"cannot save tensor {name!r} of dtype {tensor.dtype} in safetensors")
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": DTYPE_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        for _, tensor in ordered:
            handle.write(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the safetensors header declares it."""

    dtype: str
    shape: tuple[int, ...]


class InvalidSafetensors(Exception):
    """What makes a file unreadable as safetensors (worded to follow "not a valid safetensors file:")."""


def parse_header(path: Path) -> tuple[dict[str, str], dict[str, TensorInfo]]:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise InvalidSafetensors(f"it is only {size} bytes long")
        (header_bytes,) = struct.unpack("<Q", prefix)
        if header_bytes > min(size - 8, MAX_HEADER_BYTES):
            raise InvalidSafetensors(
                f"it declares a {header_bytes}-byte header but holds {size} bytes (truncated, or another format)"
            )
        raw = handle.read(header_bytes)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidSafetensors("its header is not JSON (truncated, or another format)") from None
    if not isinstance(header, dict):
        raise InvalidSafetensors("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidSafetensors("its __metadata__ is not a string-to-string map")
    infos: dict[str, TensorInfo] = {}
    data_end = 0
    for name, spec in header.items():
        try:
            dtype, shape, (begin, end) = spec["dtype"], tuple(int(d) for d in spec["shape"]), spec["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise InvalidSafetensors(f"the header entry of tensor {name!r} is malformed") from None
        if dtype not in DTYPE_BYTES:
            raise InvalidSafetensors(f"tensor {name!r} has unsupported dtype {dtype!r}")
        if begin < 0 or end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise InvalidSafetensors(f"tensor {name!r} declares {end - begin} bytes for shape {list(shape)} of {dtype}")
        infos[name] = TensorInfo(dtype, shape)
        data_end = max(data_end, end)
    data_bytes = size - 8 - header_bytes
    if data_end > data_bytes:
        raise InvalidSafetensors(
            f"it is truncated: its tensors need {data_end} data bytes, the file holds {data_bytes}"
        )
    if data_end < data_bytes:
        raise InvalidSafetensors(f"it has {data_bytes - data_end} unexpected bytes after its tensors")
    return metadata, infos


def read_safetensors_header(path: str | Path) -> tuple[dict[str, str], dict[str, TensorInfo]]:
    """Parse and check a safetensors header: ``(metadata, {name: TensorInfo})``.

    Checks that the declared tensors fill the file exactly, so a truncated download
    or a file that is not safetensors at all is caught before any tensor is read.
    """
    try:
        return parse_header(Path(path))
    except InvalidSafetensors as err:
        raise WeightsError(f"{path} is not a valid safetensors file: {err}") from None
