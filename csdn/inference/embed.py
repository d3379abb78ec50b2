"""``embed_image``: from user images to modality-invariant, unit-norm embeddings.

Accepts one image or many (paths, PIL images, numpy arrays, or preprocessed float
tensors), decodes and transforms lazily batch by batch so memory stays bounded,
and runs the flipped copy in the same forward pass as the original, through the
folded, channels-last inference tower of :mod:`csdn.inference.fast`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from csdn.errors import ImageDecodeError, ImageTensorError, UnsupportedInputError
from csdn.inference.fast import compute_dtype, inference_features
from csdn.inference.protocol import EmbeddingModel
from csdn.modality import normalize_modality
from csdn.preprocess import ACCEPTED_IMAGE_INPUTS, TestTransform, check_bit_depth, load_image, nonfinite_rows

_ACCEPTED = (
    f"{ACCEPTED_IMAGE_INPUTS}, a preprocessed float tensor [3,H,W] or [N,3,H,W], "
    "a numpy batch NxHxWxC, or a list/tuple of any of these"
)


def _is_file_like(item: Any) -> bool:
    return isinstance(item, (bytes, bytearray, memoryview)) or callable(getattr(item, "read", None))


def _is_single_image(images: Any) -> bool:
    if isinstance(images, (str, os.PathLike, Image.Image)) or _is_file_like(images):
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
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            return True
        if images.dim() == 4:
            return False
        raise ValueError(f"preprocessed image tensors must be [3,H,W] or [N,3,H,W], got {list(images.shape)}")
    if isinstance(images, Sequence):
        return False
    raise UnsupportedInputError(f"embed_image cannot read {type(images).__name__}; pass {_ACCEPTED}")


def _check_items(images: Sequence[Any]) -> None:
    """Refuse unsupported list items and tensors of mixed or wrong shape before any image is decoded."""
    shapes: dict[tuple[int, ...], int] = {}
    for index, item in enumerate(images):
        if isinstance(item, torch.Tensor):
            if item.dim() != 3:
                raise ImageTensorError(
                    f"a preprocessed image tensor in a list must be [3,H,W], got {list(item.shape)} at item {index}"
                )
            shapes.setdefault(tuple(item.shape), index)
        elif not (isinstance(item, (str, os.PathLike, Image.Image, np.ndarray)) or _is_file_like(item)):
            raise UnsupportedInputError(
                f"item {index} of the list is a {type(item).__name__}, which embed_image cannot read; "
                f"each item must be {ACCEPTED_IMAGE_INPUTS} or a preprocessed float tensor [3,H,W]"
            )
    if len(shapes) > 1:
        listed = "; ".join(f"{list(shape)} (first at item {index})" for shape, index in shapes.items())
        raise ImageTensorError(
            f"preprocessed image tensors in one list must all have the same size, found {listed}; "
            "pass raw images to have them resized, or resize the tensors to the model's input size"
        )


def _check_tensor_size(shape: Sequence[int], config_size: tuple[int, int], what: str) -> None:
    """The user's own tensor shape in the size error, not the batch the model sees."""
    height, width = config_size
    if shape[-3] != 3 or tuple(shape[-2:]) != (height, width):
        needed = f"[3,{height},{width}]" if len(shape) == 3 else f"[N,3,{height},{width}]"
        raise ImageTensorError(
            f"{what} has shape {list(shape)} but this model needs {needed}; "
            "pass raw images (paths, PIL images, arrays) to have them resized and normalised"
        )


def _check_finite(batch: torch.Tensor, first: int) -> None:
    """Refuse preprocessed images holding NaN/inf, naming their positions in the call."""
    bad = nonfinite_rows(batch, first)
    if bad:
        raise ImageTensorError(
            f"{bad[0]} preprocessed image(s) hold NaN or infinite values (image {bad[1]} of this call, "
            "counting from 0); "
            "their embeddings would be meaningless. Check the code that produced the tensors, "
            "or pass raw images to embed_image() to have them preprocessed"
        )


def _batches(images: Any, transform: TestTransform, batch_size: int, bit_depth: int | None) -> Iterator[torch.Tensor]:
    """Yield preprocessed ``[B,3,H,W]`` float batches, decoding only one batch at a time."""
    if isinstance(images, torch.Tensor):
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size]
        return
    items: Sequence[Any] = list(images) if isinstance(images, np.ndarray) else images
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        tensors = []
        for offset, item in enumerate(chunk):
            if isinstance(item, torch.Tensor):
                tensors.append(item)
                continue
            try:
                tensors.append(transform(load_image(item, bit_depth=bit_depth)))
            except ImageDecodeError as err:
                if isinstance(item, (str, os.PathLike)) or len(items) == 1:
                    raise  # the message names the file already, or there is only one image
                raise ImageDecodeError(f"image {start + offset} of this call: {err}") from err
        yield torch.stack(tensors)


def _cpu_has_bf16() -> bool:
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe and probe())


def _check_precision(precision: str, device: torch.device) -> None:
    """Reject unknown names before any image is read; warn where bf16 would only be emulated."""
    if compute_dtype(precision) == torch.bfloat16 and device.type == "cpu" and not _cpu_has_bf16():
        warnings.warn(
            "this CPU has no native bfloat16 support (AVX512-BF16 or AMX); precision='bf16' will be "
            "emulated and likely slower than the default precision='fp32'",
            stacklevel=3,
        )


def embed_images(
    model: EmbeddingModel,
    images: Any,
    modality: str,
    *,
    batch_size: int = 32,
    flip: bool = True,
    progress: bool = False,
    precision: str = "fp32",
    bit_depth: int | None = None,
) -> torch.Tensor:
    """Embed images of one modality.

    Args:
        images: one image (path, ``PIL.Image`` in any mode, numpy array HxW or HxWxC
            of uint8/uint16/float, encoded image ``bytes``/``bytearray``, a binary file
            object such as ``io.BytesIO``, or a preprocessed float tensor ``[3,H,W]``), or
            many (a list/tuple of those, a numpy batch ``NxHxWxC``, or a tensor ``[N,3,H,W]``).
        modality: ``"visible"`` or ``"infrared"`` (aliases: rgb/vis, ir/thermal/nir).
        flip: flip test-time augmentation; the embedding is
            ``concat(f(x), f(flip(x)))`` scaled to unit norm, else ``f(x)`` scaled to unit norm.
        precision: ``"fp32"`` (default; equals ``image_features`` to float rounding) or
            ``"bf16"`` (bfloat16 convolutions, float32 pooling and normalisation: several
            times faster on CPUs with AMX / AVX512-BF16 and on GPUs, embeddings within
            ~1e-2 cosine of fp32; see :mod:`csdn.inference.fast`).
        bit_depth: how frames deeper than 8 bits (16-bit thermal PNG/TIFF, uint16 arrays)
            are scaled to 8 bits: ``8|10|12|14|16`` scales every frame of the call alike
            (``2**bit_depth - 1`` -> 255; a larger value is an error naming the image);
            ``None`` (default) guesses per frame, see :func:`csdn.preprocess.load_image`.
            State it for frames from one camera.

    Raises:
        UnsupportedInputError: (a ``TypeError``) an input type it cannot read; the message lists those it can.
        ImageTensorError: preprocessed tensors of the wrong or mixed sizes, or holding NaN/inf.
        ImageDecodeError: an image that cannot be decoded, or values beyond ``bit_depth``.

    Returns:
        float32 tensor on the CPU: ``[D]`` for one image, ``[N, D]`` for many; rows have unit norm.
    """
    modality = normalize_modality(modality)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    bit_depth = check_bit_depth(bit_depth)
    single = _is_single_image(images)
    if isinstance(images, torch.Tensor):
        _check_tensor_size(images.shape, model.config.image_size, "the image tensor" if single else "the image batch")
    if single:
        images = images.unsqueeze(0) if isinstance(images, torch.Tensor) else [images]
    elif not isinstance(images, (torch.Tensor, np.ndarray)):
        _check_items(images)
        tensors = [item for item in images if isinstance(item, torch.Tensor)]
        if tensors:
            _check_tensor_size(tensors[0].shape, model.config.image_size, "a preprocessed image tensor in the list")
    total = images.shape[0] if isinstance(images, (torch.Tensor, np.ndarray)) else len(images)
    device = next(model.parameters()).device
    _check_precision(precision, device)
    transform = TestTransform(model.config)
    dim = model.config.test_feature_dim * (2 if flip else 1)
    outputs: list[torch.Tensor] = []

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(
            total=total, disable=not progress, desc=f"embed {modality}", unit="img"
        ) as bar:
            done = 0
            for batch in _batches(images, transform, batch_size, bit_depth):
                _check_finite(batch, done)
                batch = batch.to(device)
                count = batch.shape[0]
                done += count
                if flip:
                    batch = torch.cat([batch, batch.flip(3)], dim=0)
                features = inference_features(model, batch, modality, precision)
                if flip:
                    features = torch.cat([features[:count], features[count:]], dim=1)
                outputs.append(F.normalize(features, dim=1).cpu())
                bar.update(count)
    finally:
        model.train(was_training)
    result = torch.cat(outputs) if outputs else torch.empty(0, dim)
    return result[0] if single else result
