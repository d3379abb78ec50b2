"""``embed_image``: from user images to modality-invariant, unit-norm embeddings.

Accepts one image or many (paths, PIL images, numpy arrays, or preprocessed float
tensors), decodes and transforms lazily batch by batch so memory stays bounded,
and runs the flipped copy in the same forward pass as the original, through the
folded, channels-last inference tower of :mod:`csdn.inference.fast`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from csdn.errors import ImageTensorError, SkippedImagesWarning, UnsupportedInputError, list_positions
from csdn.images.batches import (
    SkippedImage,
    check_batch_size,
    check_flip,
    check_on_error,
    decoded_batches,
    is_file_like,
    is_one_image,
    refuse_all_skipped,
    refuse_nonfinite_rows,
)
from csdn.images.files import expand_folders
from csdn.images.transforms import ACCEPTED_IMAGE_INPUTS, TestTransform, check_bit_depth, nonfinite_rows
from csdn.inference.fast import compute_dtype, inference_features
from csdn.inference.protocol import EmbeddingModel
from csdn.modality import normalize_modality
from csdn.system.device import cpu_has_bf16

_ACCEPTED = (
    f"{ACCEPTED_IMAGE_INPUTS}, a folder of images, a preprocessed float tensor [3,H,W] or [N,3,H,W], "
    "a numpy batch NxHxWxC, or a list/tuple of any of these"
)


@dataclass(frozen=True)
class EmbeddingReport:
    """What :func:`embed_with_report` returns: the rows, which inputs they belong to, and what was skipped.

    ``sources`` are the inputs after folders were expanded (file paths as strings); row ``r`` of
    ``embeddings`` belongs to ``sources[kept[r]]``.
    """

    embeddings: torch.Tensor
    sources: list[Any]
    kept: list[int]
    skipped: list[SkippedImage]
    single: bool  # the call passed one image (not a folder, list or batch)


def _refuse_meta(tensor: torch.Tensor, what: str) -> None:
    if tensor.is_meta:
        raise ImageTensorError(f"{what} is on the 'meta' device: it has a shape but no values; pass real image tensors")


def _is_single_image(images: Any) -> bool:
    if isinstance(images, torch.Tensor):
        _refuse_meta(images, "the image tensor")
        if images.dim() == 3:
            return True
        if images.dim() == 4:
            return False
        raise ValueError(f"preprocessed image tensors must be [3,H,W] or [N,3,H,W], got {list(images.shape)}")
    one = is_one_image(images)
    if one is not None:
        return one
    if isinstance(images, Sequence):
        return False
    raise UnsupportedInputError(f"embed_image cannot read {type(images).__name__}; pass {_ACCEPTED}")


def _check_items(images: Sequence[Any]) -> None:
    """Refuse unsupported list items and tensors of mixed or wrong shape before any image is decoded."""
    shapes: dict[tuple[int, ...], int] = {}
    nonfinite: list[int] = []
    for index, item in enumerate(images):
        if isinstance(item, torch.Tensor):
            _refuse_meta(item, f"item {index} of the list")
            if item.dim() != 3:
                raise ImageTensorError(
                    f"a preprocessed image tensor in a list must be [3,H,W], got {list(item.shape)} at item {index}"
                )
            shapes.setdefault(tuple(item.shape), index)
            if item.is_floating_point() and not bool(torch.isfinite(item).all()):
                nonfinite.append(index)
        elif not (isinstance(item, (str, os.PathLike, Image.Image, np.ndarray)) or is_file_like(item)):
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
    if nonfinite:
        _refuse_nonfinite(len(nonfinite), list_positions(nonfinite))


def _check_tensor_size(shape: Sequence[int], config_size: tuple[int, int], what: str) -> None:
    """The user's own tensor shape in the size error, not the batch the model sees."""
    height, width = config_size
    if shape[-3] != 3 or tuple(shape[-2:]) != (height, width):
        needed = f"[3,{height},{width}]" if len(shape) == 3 else f"[N,3,{height},{width}]"
        raise ImageTensorError(
            f"{what} has shape {list(shape)} but this model needs {needed}; "
            "pass raw images (paths, PIL images, arrays) to have them resized and normalised"
        )


def _refuse_nonfinite(count: int, positions: str) -> None:
    raise ImageTensorError(
        f"{count} preprocessed image(s) hold NaN or infinite values (image {positions} of this call, "
        "counting from 0); their embeddings would be meaningless. Check the code that produced the "
        "tensors, or pass raw images to embed_image() to have them preprocessed"
    )


def _tensor_batches(images: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, int]]:
    """``(batch, images consumed)`` of a preprocessed ``[N,3,H,W]`` tensor; NaN/inf refused by position."""
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        bad = nonfinite_rows(batch, start)
        if bad:
            _refuse_nonfinite(*bad)
        yield batch, batch.shape[0]


def _is_tensor(item: Any) -> bool:
    """A preprocessed image: passed through undecoded."""
    return isinstance(item, torch.Tensor)


def _item_batches(
    items: Sequence[Any],
    transform: TestTransform,
    batch_size: int,
    bit_depth: int | None,
    skipped: list[SkippedImage] | None,
) -> Iterator[tuple[torch.Tensor | None, int]]:
    """``(batch, images consumed)`` of decoded and preprocessed images; None for a batch all skipped."""
    for tensors, consumed in decoded_batches(items, transform, batch_size, bit_depth, skipped, ready=_is_tensor):
        yield (torch.stack(tensors) if tensors else None), consumed


def _check_precision(precision: str, device: torch.device) -> None:
    """Reject unknown names before any image is read; warn where bf16 would only be emulated."""
    if compute_dtype(precision) == torch.bfloat16 and device.type == "cpu" and not cpu_has_bf16():
        warnings.warn(
            "this CPU has no native bfloat16 support (AVX512-BF16 or AMX); precision='bf16' will be "
            "emulated and likely slower than the default precision='fp32'",
            stacklevel=3,
        )


def _prepare(images: Any, model: EmbeddingModel) -> tuple[Any, bool]:
    """``(images as a batch tensor, array or list with folders expanded, whether one image was passed)``."""
    single = _is_single_image(images)
    if isinstance(images, torch.Tensor):
        _check_tensor_size(images.shape, model.config.image_size, "the image tensor" if single else "the image batch")
        return (images.unsqueeze(0) if single else images), single
    if single:
        return [images], True
    if isinstance(images, (str, os.PathLike)):  # a folder
        images = [images]
    if isinstance(images, np.ndarray):
        return images, False
    images = expand_folders(images)
    _check_items(images)
    tensors = [item for item in images if isinstance(item, torch.Tensor)]
    if tensors:
        _check_tensor_size(tensors[0].shape, model.config.image_size, "a preprocessed image tensor in the list")
    return images, False


def embed_with_report(
    model: EmbeddingModel,
    images: Any,
    modality: str,
    *,
    batch_size: int = 32,
    flip: bool = True,
    progress: bool = False,
    precision: str = "fp32",
    bit_depth: int | None = None,
    on_error: str = "raise",
) -> EmbeddingReport:
    """:func:`embed_images` for many images, also saying which inputs each row belongs to and what was skipped.

    For callers that must label rows (the CLI's manifests): with ``on_error="skip"``,
    row ``r`` belongs to ``report.sources[report.kept[r]]``.
    """
    modality = normalize_modality(modality)
    batch_size, flip = check_batch_size(batch_size), check_flip(flip)
    check_on_error(on_error)
    bit_depth = check_bit_depth(bit_depth)
    items, single = _prepare(images, model)
    total = items.shape[0] if isinstance(items, (torch.Tensor, np.ndarray)) else len(items)
    device = next(model.parameters()).device
    _check_precision(precision, device)
    transform = TestTransform(model.config)
    dim = model.config.test_feature_dim * (2 if flip else 1)
    skipped: list[SkippedImage] | None = [] if on_error == "skip" else None
    batches: Iterator[tuple[torch.Tensor | None, int]]
    if isinstance(items, torch.Tensor):
        batches = _tensor_batches(items, batch_size)
    else:
        batches = _item_batches(
            list(items) if isinstance(items, np.ndarray) else items, transform, batch_size, bit_depth, skipped
        )
    outputs: list[torch.Tensor] = []

    was_training = model.training
    model.eval()
    try:
        with (
            torch.inference_mode(),
            tqdm(total=total, disable=not progress, desc=f"embed {modality}", unit="img") as bar,
        ):
            for batch, consumed in batches:
                if batch is not None:
                    outputs.append(_embed_batch(model, batch.to(device), modality, precision, flip))
                bar.update(consumed)
    finally:
        model.train(was_training)
    skipped = skipped or []
    refuse_all_skipped(skipped, total)
    dropped = {s.index for s in skipped}
    sources = items if isinstance(items, list) else list(range(total))
    embeddings = torch.cat(outputs) if outputs else torch.empty(0, dim)
    kept = [index for index in range(total) if index not in dropped]
    refuse_nonfinite_rows(torch.isfinite(embeddings).all(dim=1).tolist(), sources, kept)
    return EmbeddingReport(
        embeddings=embeddings,
        sources=sources,
        kept=kept,
        skipped=skipped,
        single=single,
    )


def _embed_batch(model: EmbeddingModel, batch: torch.Tensor, modality: str, precision: str, flip: bool) -> torch.Tensor:
    """Unit-norm embeddings of one preprocessed batch; the flipped copy runs in the same forward pass."""
    count = batch.shape[0]
    if flip:
        batch = torch.cat([batch, batch.flip(3)], dim=0)
    features = inference_features(model, batch, modality, precision)
    if flip:
        features = torch.cat([features[:count], features[count:]], dim=1)
    return F.normalize(features, dim=1).cpu()


def embed_images(model: EmbeddingModel, images: Any, modality: str, **options: Any) -> torch.Tensor:
    """Embed images of one modality.

    Args (the keyword options are :func:`embed_with_report`'s, defaults there):
        images: one image (path, ``PIL.Image`` in any mode, numpy array HxW or HxWxC
            of uint8/uint16/float, encoded image ``bytes``/``bytearray``, a binary file
            object such as ``io.BytesIO``, or a preprocessed float tensor ``[3,H,W]``), or
            many (a folder path, a list/tuple of any of those, a numpy batch ``NxHxWxC``,
            or a tensor ``[N,3,H,W]``). A folder stands for its images, searched
            recursively in sorted path order, image suffixes only
            (:data:`csdn.images.files.IMAGE_SUFFIXES`), hidden files and folders skipped;
            :func:`csdn.images.files.expand_folders` lists them in the same order.
        modality: ``"visible"`` or ``"infrared"`` (aliases: rgb/vis, ir/thermal/nir).
        batch_size: images per forward pass (default 32).
        progress: a tqdm bar (default off).
        flip: flip test-time augmentation; the embedding is
            ``concat(f(x), f(flip(x)))`` scaled to unit norm, else ``f(x)`` scaled to unit norm.
        precision: ``"fp32"`` (default; equals ``image_features`` to float rounding) or
            ``"bf16"`` (bfloat16 convolutions, float32 pooling and normalisation: several
            times faster on CPUs with AMX / AVX512-BF16 and on GPUs, embeddings within
            ~1e-2 cosine of fp32; see :mod:`csdn.inference.fast`).
        bit_depth: how frames deeper than 8 bits (16-bit thermal PNG/TIFF, uint16 arrays)
            are scaled to 8 bits: ``8|10|12|14|16`` scales every frame of the call alike
            (``2**bit_depth - 1`` -> 255; a larger value is an error naming the image);
            ``None`` (default) guesses per frame, see :func:`csdn.images.transforms.load_image`.
            State it for frames from one camera.
        on_error: ``"raise"`` (default): the first image that cannot be read stops the call,
            named. ``"skip"``: such images are left out of the result and listed in one
            :class:`csdn.errors.SkippedImagesWarning` (its ``.skipped`` holds
            :class:`SkippedImage` records); if none can be read, ``ImageDecodeError``. Use
            :func:`embed_with_report` to learn which input each row belongs to.

    Raises:
        UnsupportedInputError: (a ``TypeError``) an input type it cannot read; the message lists those it can.
        ImageTensorError: preprocessed tensors of the wrong or mixed sizes, or holding NaN/inf.
        ImageDecodeError: an image that cannot be decoded, or values beyond ``bit_depth``.
        FileNotFoundError: a path that is neither an image file nor a folder, or a folder without images.

    Returns:
        float32 tensor on the CPU: ``[D]`` for one image, ``[N, D]`` for many; rows have unit norm.
    """
    report = embed_with_report(model, images, modality, **options)
    if report.skipped:
        warnings.warn(SkippedImagesWarning(report.skipped), stacklevel=2)
    return report.embeddings[0] if report.single else report.embeddings
