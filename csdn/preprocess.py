"""Image decoding and the test-time transform (PIL + torch, no torchvision).

Decoding turns whatever a user holds (a path, a PIL image in any mode, a numpy
array of any common dtype) into an 8-bit RGB ``PIL.Image``; the test transform
resizes it to the model's input size and applies ImageNet normalisation.
``IMAGE_SUFFIXES`` are the file types that folder readers (datasets, ``csdn embed``) take as images.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from csdn.config import CSDNConfig
from csdn.errors import ImageDecodeError

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]

# File name endings (lower case) that anything listing a folder treats as images: the
# dataset readers, training folders and `csdn embed`. PIL decodes every one of them.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")

# Sensor bit depths a 16-bit container commonly carries (thermal cameras store
# 14-bit counts, machine-vision cameras 10 or 12). A frame is scaled by the
# smallest of these that holds its largest value, so a 14-bit frame fills the
# 8-bit range instead of coming out a quarter as bright.
_SENSOR_BIT_DEPTHS = (8, 10, 12, 14, 16)

_RESAMPLING = {
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def _bit_depth(max_value: float) -> int:
    for bits in _SENSOR_BIT_DEPTHS:
        if max_value <= (1 << bits) - 1:
            return bits
    return 16


def _to_uint8(array: np.ndarray, bit_depth: int | None) -> np.ndarray:
    """Scale a single- or multi-channel array to uint8 by its dtype and real bit depth."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ImageDecodeError("image array holds NaN or infinite values")
        low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
        if low < 0:
            raise ImageDecodeError(f"float image values must be >= 0, found minimum {low:g}")
        scale = 255.0 if high <= 1.0 else 1.0  # [0, 1] floats, or floats already in [0, 255]
        if high * scale > 255.0 + 1e-6:
            raise ImageDecodeError(
                f"float image values must lie in [0, 1] or [0, 255], found maximum {high:g}"
            )
        return np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and int(array.min()) < 0:
            raise ImageDecodeError("integer image values must be non-negative")
        peak = int(array.max(initial=0))
        bits = bit_depth or _bit_depth(peak)
        if peak > (1 << bits) - 1:
            raise ImageDecodeError(f"image values reach {peak}, beyond a {bits}-bit range")
        if bits == 8:
            return array.astype(np.uint8)
        scaled = array.astype(np.float64) * (255.0 / ((1 << bits) - 1))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    raise ImageDecodeError(f"unsupported image array dtype {array.dtype}")


def _array_to_rgb(array: np.ndarray, bit_depth: int | None) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]  # drop alpha: re-identification looks at the person, not transparency
    if array.ndim == 2:
        array = np.repeat(_to_uint8(array, bit_depth)[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 3:
        array = _to_uint8(array, bit_depth)
    else:
        raise ImageDecodeError(
            f"an image array must be HxW or HxWxC with C in 1, 3 or 4; got shape {tuple(array.shape)}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageDecodeError(f"image has no pixels (shape {tuple(array.shape)})")
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def _pil_to_rgb(image: Image.Image, bit_depth: int | None) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        # 16/32-bit integer and float frames (thermal cameras): PIL's own convert()
        # would clip everything above 255, so scale by the real bit depth instead.
        return _array_to_rgb(np.asarray(image), bit_depth)
    if mode == "P":
        image = image.convert("RGBA")
    if mode in ("LA", "La", "PA"):
        image = image.convert("L")
    return image.convert("RGB")


_BOMB_SIZES = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")


def _too_large(path: Path, err: Image.DecompressionBombError) -> ImageDecodeError:
    """PIL's decompression-bomb refusal, worded with the file, its size, the limit and the way round it."""
    found = _BOMB_SIZES.search(str(err))
    size = f"it has {int(found[1]):,} pixels, over PIL's limit of {int(found[2]):,}" if found else str(err)
    return ImageDecodeError(
        f"cannot read image {path}: {size} (PIL refuses such images as possible decompression bombs); "
        "shrink or crop it, or raise PIL.Image.MAX_IMAGE_PIXELS in Python if you trust the file"
    )


def load_image(src: ImageInput, bit_depth: int | None = None) -> Image.Image:
    """Decode ``src`` into an 8-bit RGB image.

    Single-channel images (grayscale, infrared) are replicated to three channels,
    alpha is dropped, and 16-bit frames are scaled to 8 bits by their bit depth
    (``bit_depth``, or the smallest of 8/10/12/14/16 bits that holds the frame's
    largest value).
    """
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        try:
            with Image.open(path) as opened:
                opened.load()
                return _pil_to_rgb(opened, bit_depth).copy()
        except (UnidentifiedImageError, OSError) as err:
            raise ImageDecodeError(f"cannot read image {path}: {err}") from err
        except Image.DecompressionBombError as err:
            raise _too_large(path, err) from err
    if isinstance(src, Image.Image):
        return _pil_to_rgb(src, bit_depth)
    if isinstance(src, np.ndarray):
        return _array_to_rgb(src, bit_depth)
    raise TypeError(
        f"cannot read an image from {type(src).__name__}; pass a file path, a PIL image, "
        "a numpy array or a preprocessed float tensor [N,3,H,W]"
    )


class TestTransform:
    """Resize to the model's input size, scale to [0, 1] and normalise with the config's statistics.

    Lanczos resampling matches the reference test loader, which resizes every
    test image with Lanczos before its tensor transform.
    """

    __test__ = False  # not a pytest class, despite the name

    def __init__(self, config: CSDNConfig):
        self.size = config.image_size
        if config.interpolation not in _RESAMPLING:
            raise ValueError(
                f"unknown interpolation {config.interpolation!r}; choose one of {sorted(_RESAMPLING)}"
            )
        self.resample = _RESAMPLING[config.interpolation]
        self.mean = torch.tensor(config.mean).view(3, 1, 1)
        self.std = torch.tensor(config.std).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        height, width = self.size
        if image.size != (width, height):
            image = image.resize((width, height), self.resample)
        array = np.asarray(image, dtype=np.uint8)
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
        return (tensor - self.mean) / self.std
