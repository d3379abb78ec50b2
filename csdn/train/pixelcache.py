"""The stage-3 training images decoded and resized once per run, as memory-mapped uint8 arrays.

The authors pre-resize their training set into arrays before training; decoding and resizing
every JPEG at every step instead costs more CPU time than the augmentations themselves, and a
GPU trains faster than a few CPU workers decode. The cache holds exactly what
:meth:`csdn.train.augment.TrainAugment.resized` returns for each image, so augmented batches
are the same bit for bit with or without it (and resume stays bit-exact).

It lives in the run folder (``<run>/pixel-cache/``), never beside the user's data. Each array
is written to a temporary file and renamed, then a small JSON record names the key it was
built for (every file's path, size and modification time, the input size and resize filter)
and the array's byte size; an array whose record is missing, stale or does not match its size
(a torn write) is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from csdn.system.fileio import atomic_write_text

CACHE_DIR = "pixel-cache"
FORMAT_VERSION = 2  # 2: pixels turned upright by their EXIF orientation (caches of 1 hold them as stored)


def cache_key(images: Sequence[Any], size: tuple[int, int], resample: Any) -> str | None:
    """A hash of what the cached pixels depend on; None when an image is not a file (nothing to save)."""
    digest = hashlib.sha256(json.dumps([FORMAT_VERSION, list(size), str(resample)]).encode())
    for image in images:
        if not isinstance(image, (str, os.PathLike)):
            return None
        stat = os.stat(image)
        digest.update(f"{os.fspath(image)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class PixelCache:
    """Read side: ``cache[i]`` is image ``i`` as uint8 ``[H, W, 3]``, from a memory map opened lazily.

    Only the path travels to data-loading workers (a pickled memory map would copy its data).
    """

    def __init__(self, path: Path):
        self.path = path
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_array": None}

    def __len__(self) -> int:
        return len(self._pixels())

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self._pixels()[index])

    def _pixels(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array


def _record_path(array: Path) -> Path:
    return array.with_suffix(".json")


def _is_current(array: Path, key: str, count: int) -> bool:
    try:
        record = json.loads(_record_path(array).read_text(encoding="utf-8"))
        return record == {"key": key, "count": count, "bytes": array.stat().st_size}
    except (OSError, ValueError):
        return False


def open_or_build(
    run_dir: Path, name: str, images: Sequence[Any], resize: Any, size: tuple[int, int], resample: Any, progress: bool
) -> PixelCache | None:
    """The cache of ``images`` (``resize(image)`` -> uint8 [H,W,3] at ``size``), built if needed; None if
    the images are not files (in-memory arrays decode nothing)."""
    key = cache_key(images, size, resample)
    if key is None:
        return None
    folder = run_dir / CACHE_DIR
    array = folder / f"{name}.npy"
    if not _is_current(array, key, len(images)):
        folder.mkdir(parents=True, exist_ok=True)
        _record_path(array).unlink(missing_ok=True)  # the record goes first: a crash leaves no stale claim
        temp = folder / f".{name}.npy.tmp"
        height, width = size
        pixels = np.lib.format.open_memmap(temp, mode="w+", dtype=np.uint8, shape=(len(images), height, width, 3))
        for index, image in enumerate(tqdm(images, desc=f"caching {name} pixels", disable=not progress, unit="img")):
            pixels[index] = resize(image)
        pixels.flush()
        del pixels
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, array)
        record = {"key": key, "count": len(images), "bytes": array.stat().st_size}
        atomic_write_text(_record_path(array), json.dumps(record) + "\n")
    return PixelCache(array)
