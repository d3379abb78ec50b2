"""Decoding a list of user images one batch at a time, with unreadable ones raised or skipped.

Torch-free, so the PyTorch embedder (:mod:`csdn.inference.embed`) and the exported-model
runtime (:mod:`csdn.runtime`) read inputs, name bad images and honour ``on_error`` the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from csdn.errors import (
    ImageDecodeError,
    NonFiniteEmbeddingError,
    SettingError,
    describe_skipped,
    list_positions,
    setting_name,
)
from csdn.images.decode import load_image

ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class SkippedImage:
    """An image ``on_error="skip"`` left out: its position among the inputs (folders expanded), name, reason."""

    index: int
    source: str
    reason: str


def is_file_like(item: Any) -> bool:
    """Encoded image bytes, or a binary file object with ``.read()``."""
    return isinstance(item, (bytes, bytearray, memoryview)) or callable(getattr(item, "read", None))


def is_image_input(item: Any) -> bool:
    """A raw image of a kind every engine decodes: a path, a PIL image, a numpy array, bytes or a file object."""
    return isinstance(item, (str, os.PathLike, Image.Image, np.ndarray)) or is_file_like(item)


def is_one_image(images: Any) -> bool | None:
    """True for one image, False for many, None for a type these torch-free rules do not cover (a tensor).

    A path is one image unless it is a folder; a PIL image and encoded bytes or a file object
    are one; a numpy array is one image (HxW, HxWxC with C in 1, 3, 4) or a batch (NxHxWxC);
    a list or tuple is many.
    """
    if isinstance(images, (str, os.PathLike)):
        return not os.path.isdir(images)
    if isinstance(images, Image.Image) or is_file_like(images):
        return True
    if isinstance(images, np.ndarray):
        if images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (1, 3, 4)):
            return True
        if images.ndim == 4:
            return False
        raise ValueError(
            f"cannot tell images apart in an array of shape {tuple(images.shape)}: pass one image as "
            "HxW or HxWxC (C in 1, 3, 4), a batch as NxHxWxC, or a list of images"
        )
    if isinstance(images, (list, tuple)):
        return False
    return None


def check_batch_size(batch_size: Any) -> int:
    """A whole number of images per forward pass, at least 1 (``1.5`` or ``True`` are refused by name)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise SettingError(
            f"{setting_name('batch_size')} must be a whole number of images, at least 1; got {batch_size!r}"
        )
    return int(batch_size)


def check_flip(flip: Any) -> bool:
    """``flip`` is True or False: a string such as ``"no"`` would otherwise count as true."""
    if not isinstance(flip, (bool, np.bool_)):
        raise SettingError(f"flip must be True or False, got {flip!r}")
    return bool(flip)


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return on_error


def _label(item: Any, index: int) -> str:
    return str(item) if isinstance(item, (str, os.PathLike)) else f"image {index} of this call"


def decoded_batches(
    items: Sequence[Any],
    preprocess: Callable[[Image.Image], Any],
    batch_size: int,
    bit_depth: int | None,
    skipped: list[SkippedImage] | None,
    ready: Callable[[Any], bool] = lambda item: False,
) -> Iterator[tuple[list[Any], int]]:
    """``(preprocessed images of one batch, inputs consumed)``, decoding only that batch.

    Items for which ``ready(item)`` is true (already preprocessed) pass through as they are.
    With ``skipped`` a list, an image that cannot be read is recorded there and left out (a
    batch may then be empty); with None the first one raises, named by path or position.
    """
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        done = []
        for index, item in enumerate(chunk, start):
            if ready(item):
                done.append(item)
                continue
            try:
                done.append(preprocess(load_image(item, bit_depth=bit_depth)))
            except (ImageDecodeError, FileNotFoundError) as err:
                if skipped is not None:
                    skipped.append(SkippedImage(index, _label(item, index), str(err)))
                elif isinstance(item, (str, os.PathLike)) or len(items) == 1:
                    raise  # the message names the file already, or there is only one image
                else:
                    raise ImageDecodeError(f"{_label(item, index)}: {err}") from err
        yield done, len(chunk)


def refuse_all_skipped(skipped: Sequence[SkippedImage], total: int) -> None:
    """Skipping is for a few bad images among good ones: none readable at all is an error listing them."""
    if skipped and len(skipped) == total:
        raise ImageDecodeError(f"none of the {total} images could be read:\n{describe_skipped(skipped)}")


def refuse_nonfinite_rows(finite: Iterable[Any], sources: Sequence[Any], kept: Sequence[int]) -> None:
    """A model's output is checked like its input: NaN or infinite embeddings are an error naming their images.

    ``finite[r]`` says whether embedding row ``r`` is finite; row ``r`` embeds ``sources[kept[r]]``.
    Finite images can still give non-finite embeddings: values far outside the normalised range
    (a tensor scaled by 1e15) overflow float32 inside the network, and so do corrupted weights.
    """
    bad = [kept[row] for row, ok in enumerate(finite) if not ok]
    if not bad:
        return
    files = [str(sources[index]) for index in bad if isinstance(sources[index], (str, os.PathLike))]
    named = f"{', '.join(files[:3])}{', ...' if len(files) > 3 else ''}; " if files else ""
    raise NonFiniteEmbeddingError(
        f"the model gave NaN or infinite embeddings for {len(bad)} of {len(kept)} image(s): {named}image "
        f"{list_positions(bad)} of this call, counting from 0. Either the input values are far outside an "
        "image's range (preprocessed tensors must be normalised images, not scaled by huge factors), or the "
        "model's weights are corrupted: check the inputs, and load the model again"
    )
