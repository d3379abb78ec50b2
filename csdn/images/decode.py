"""Image decoding and test-time preprocessing in numpy and PIL alone (no torch).

Decoding turns whatever a user holds (a path, a PIL image in any mode, a numpy
array of any common dtype, encoded bytes) into an 8-bit RGB ``PIL.Image``, turned
upright by its EXIF orientation tag when it was read from an encoded file;
:class:`Preprocessing` resizes it to the model's input size and applies the
config's normalisation, giving a float32 ``[3, H, W]`` array. Both the PyTorch
path (:class:`csdn.images.transforms.TestTransform` wraps this) and the torch-free
runtime (:mod:`csdn.runtime`) use this code, so exported models see exactly the
pixels the PyTorch model sees.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from csdn.errors import ImageDecodeError, SettingError, UnsupportedInputError

ImageInput = str | os.PathLike | Image.Image | np.ndarray | bytes | bytearray | io.IOBase

# What `load_image` (and so `embed_image`) reads, for error messages that list the choices.
ACCEPTED_IMAGE_INPUTS = (
    "a file path (str or pathlib.Path), a PIL image, a numpy array (HxW or HxWxC), "
    "encoded image bytes (bytes, bytearray), a binary file object with .read() (e.g. io.BytesIO)"
)

# Sensor bit depths a 16-bit container commonly carries (thermal cameras store
# 14-bit counts, machine-vision cameras 10 or 12). With ``bit_depth=None`` a frame is
# scaled by the smallest of these that holds its own largest value (a per-frame guess);
# a stated ``bit_depth`` scales every frame the same way.
SENSOR_BIT_DEPTHS = (8, 10, 12, 14, 16)

RESAMPLING = {
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def check_bit_depth(bit_depth: int | None) -> int | None:
    """``bit_depth`` if it is None or one of ``SENSOR_BIT_DEPTHS``, else a ``SettingError`` naming the choices."""
    if bit_depth is None:
        return None
    if (
        isinstance(bit_depth, bool)
        or not isinstance(bit_depth, (int, np.integer))
        or int(bit_depth) not in SENSOR_BIT_DEPTHS
    ):
        raise SettingError(
            f"bit_depth must be None (guess per frame) or one of {', '.join(map(str, SENSOR_BIT_DEPTHS))}, "
            f"got {bit_depth!r}; pass the bit depth your camera records (e.g. 14 for most thermal cameras)"
        )
    return int(bit_depth)


def _bit_depth(max_value: float) -> int:
    for bits in SENSOR_BIT_DEPTHS:
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
        finite = np.isfinite(array)
        if not finite.all():
            raise ImageDecodeError(
                f"image array holds {int(finite.size - np.count_nonzero(finite))} NaN or infinite values "
                f"(of {finite.size}); replace them (e.g. numpy.nan_to_num) or fix the source that produced them"
            )
        low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
        if low < 0:
            raise ImageDecodeError(f"float image values must be >= 0, found minimum {low:g}")
        scale = 255.0 if high <= 1.0 else 1.0  # [0, 1] floats, or floats already in [0, 255]
        if high * scale > 255.0 + 1e-6:
            raise ImageDecodeError(f"float image values must lie in [0, 1] or [0, 255], found maximum {high:g}")
        return np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and int(array.min()) < 0:
            raise ImageDecodeError("integer image values must be non-negative")
        peak = int(array.max(initial=0))
        bits = bit_depth or _bit_depth(peak)
        if peak > (1 << bits) - 1:
            hint = (
                f"pass the camera's real bit_depth (one of {', '.join(map(str, SENSOR_BIT_DEPTHS))})"
                if bit_depth
                else "scale the values to at most 16 bits"
            )
            raise ImageDecodeError(
                f"image values reach {peak}, beyond the {bits}-bit range (maximum {(1 << bits) - 1}); {hint}"
            )
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


# EXIF tag 0x0112 (274, also the TIFF tag): how the stored pixels must be turned to show the photo upright.
# Value -> the transpose that undoes it, as PIL.ImageOps.exif_transpose applies it; 1 (upright), a value
# outside 1-8 and a missing or unreadable tag leave the pixels as stored (as browsers show them).
ORIENTATION_TAG = 0x0112
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@contextmanager
def _exif_warnings_silenced() -> Iterator[None]:
    """PIL's warnings about a damaged EXIF block ("Corrupt EXIF data ...") name no file and would repeat
    for every such photo; the block only ever decides the orientation, which then counts as upright."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")
        yield


def exif_orientation(image: Image.Image) -> int:
    """The image's EXIF orientation (1-8), or 1 when it has none or its EXIF block cannot be parsed.

    Phone cameras store a portrait photo as landscape pixels plus this tag; a damaged EXIF block
    is no reason to refuse pixels that decode, so it counts as upright.
    """
    try:
        with _exif_warnings_silenced():
            value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # PIL's EXIF parser raises several types (struct, value, key errors) on damaged blocks
        return 1
    return value if isinstance(value, int) and value in _UPRIGHT else 1


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    method = _UPRIGHT.get(orientation)
    return image if method is None else image.transpose(method)


_BOMB_SIZES = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")


def _too_large(path: object, err: Image.DecompressionBombError) -> ImageDecodeError:
    """PIL's decompression-bomb refusal, worded with the file, its size, the limit and the way round it."""
    found = _BOMB_SIZES.search(str(err))
    size = f"it has {int(found[1]):,} pixels, over PIL's limit of {int(found[2]):,}" if found else str(err)
    return ImageDecodeError(
        f"cannot read image {path}: {size} (PIL refuses such images as possible decompression bombs); "
        "shrink or crop it, or raise PIL.Image.MAX_IMAGE_PIXELS in Python if you trust the file"
    )


def load_image(src: ImageInput, bit_depth: int | None = None) -> Image.Image:
    """Decode ``src`` into an 8-bit RGB image.

    ``src`` is a file path, a ``PIL.Image`` in any mode, a numpy array (HxW or HxWxC;
    uint8, uint16/integer or float in [0, 1] or [0, 255]), encoded image bytes
    (``bytes``/``bytearray``) or a binary file object with ``.read()`` (``io.BytesIO``, an
    open file). Single-channel images (grayscale, infrared) are replicated to three
    channels and alpha is dropped.

    Frames deeper than 8 bits (``uint16`` arrays, ``I;16``/``I`` PIL images) are scaled
    to 8 bits:

    * ``bit_depth=8|10|12|14|16``: value ``2**bit_depth - 1`` becomes 255, the same
      scaling for every frame; a value above that range is an error naming the maximum.
      State it for sequences from one camera, so every frame is scaled alike.
    * ``bit_depth=None`` (default): a **per-frame guess**, the smallest of 8/10/12/14/16
      bits that holds the frame's own largest value. Convenient for a single frame, but
      one bright pixel moves a frame to the next depth (4x darker), so frames of one
      sequence may be scaled differently.

    8-bit inputs are used as they are whatever ``bit_depth`` says.

    Encoded images (a path, bytes, a file object, or a PIL image straight from ``Image.open``)
    are turned upright by their EXIF orientation tag (the 8 values of ``PIL.ImageOps.exif_transpose``),
    so a phone's portrait photo is a portrait here too; a missing or damaged tag leaves the pixels
    as stored. A PIL image made in memory (``copy()``, ``rotate()``, ``ImageOps.exif_transpose``)
    and a numpy array are taken as they are: they hold pixels, not a file.
    """
    bit_depth = check_bit_depth(bit_depth)
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        return _decode_file(path, path, bit_depth)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _decode_file(io.BytesIO(bytes(src)), f"<{len(src)} bytes>", bit_depth)
    if callable(getattr(src, "read", None)):
        name = getattr(src, "name", None)
        return _decode_file(src, name if isinstance(name, str) else f"<{type(src).__name__}>", bit_depth)
    if isinstance(src, ImageFile.ImageFile):  # opened from a file: the same pixels as that file's path
        try:
            with _exif_warnings_silenced():
                return _decoded(src, bit_depth)
        except ImageDecodeError as err:
            name = src.filename if isinstance(src.filename, str) and src.filename else "<PIL image>"
            raise ImageDecodeError(f"image {name}: {err}") from err
    if isinstance(src, Image.Image):
        return _pil_to_rgb(src, bit_depth)
    if isinstance(src, np.ndarray):
        return _array_to_rgb(src, bit_depth)
    raise UnsupportedInputError(f"cannot read an image from {type(src).__name__}; pass {ACCEPTED_IMAGE_INPUTS}")


def _decoded(opened: ImageFile.ImageFile, bit_depth: int | None) -> Image.Image:
    """An opened image file's pixels as upright 8-bit RGB (may be ``opened`` itself)."""
    declared = opened.size
    opened.load()  # TIFF: PIL applies (and then drops) the file's orientation tag here
    if opened.size != declared:
        raise ImageDecodeError(
            f"PIL decoded it at {opened.size[0]}x{opened.size[1]} pixels although the "
            f"file declares {declared[0]}x{declared[1]} (PIL mishandles the orientation tag of some uncompressed "
            "single-channel TIFFs); save it again upright or compressed"
        )
    return _upright(_pil_to_rgb(opened, bit_depth), exif_orientation(opened))


def _decode_file(source, label, bit_depth: int | None) -> Image.Image:
    """Open and decode a path or binary file object; errors name ``label``."""
    try:
        with _exif_warnings_silenced(), Image.open(source) as opened:
            decoded = _decoded(opened, bit_depth)
            return decoded.copy() if decoded is opened else decoded
    except ImageDecodeError as err:
        raise ImageDecodeError(f"image {label}: {err}") from err
    except (UnidentifiedImageError, OSError) as err:
        raise ImageDecodeError(f"cannot read image {label}: {err}") from err
    except Image.DecompressionBombError as err:
        raise _too_large(label, err) from err


class Preprocessing:
    """Resize to ``image_size`` (height, width), scale to [0, 1] and normalise with ``mean``/``std``.

    Lanczos resampling (the config default) matches the reference test loader, which
    resizes every test image with Lanczos before its tensor transform. Built from the
    fields a model's config (or an exported model's metadata) records, so it needs
    neither torch nor the config class.
    """

    def __init__(self, image_size: Sequence[int], mean: Sequence[float], std: Sequence[float], interpolation: str):
        if interpolation not in RESAMPLING:
            raise SettingError(
                f"unknown interpolation {interpolation!r}; choose one of {', '.join(sorted(RESAMPLING))}"
            )
        height, width = (int(v) for v in image_size)
        self.size = (height, width)
        self.interpolation = interpolation
        self.resample = RESAMPLING[interpolation]
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """A decoded RGB image -> float32 ``[3, H, W]``, normalised."""
        height, width = self.size
        if image.size != (width, height):
            image = image.resize((width, height), self.resample)
        pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
        return (pixels - self.mean) / self.std
