"""``embed_image`` on PyTorch: from user images to modality-invariant, unit-norm embeddings.

A thin adapter over the shared front end (:mod:`csdn.images.embedding`), which reads the inputs,
batches, decodes lazily, runs flip test-time augmentation and reports what was skipped. This
module adds what only torch has: preprocessed float tensors as inputs, the model's device and
precision, eval mode, and the folded, channels-last inference tower of :mod:`csdn.inference.fast`
running the flipped copy in the same forward pass as the original.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from csdn.errors import ImageTensorError
from csdn.images.decode import Preprocessing
from csdn.images.embedding import EmbeddingReport, Inputs, embed_inputs, read_inputs, refuse_nonfinite_images
from csdn.inference.contract import EmbeddingModel
from csdn.inference.fast import compute_dtype, inference_features
from csdn.modality import normalize_modality
from csdn.system.device import cpu_has_bf16

__all__ = ["EmbeddingReport", "embed_images", "embed_with_report"]

_TENSORS = "a preprocessed float tensor"


def _refuse_meta(tensor: torch.Tensor, what: str) -> None:
    if tensor.is_meta:
        raise ImageTensorError(f"{what} is on the 'meta' device: it has a shape but no values; pass real image tensors")


def _check_tensor_size(shape: Sequence[int], config_size: tuple[int, int], what: str) -> None:
    """The user's own tensor shape in the size error, not the batch the model sees."""
    height, width = config_size
    if shape[-3] != 3 or tuple(shape[-2:]) != (height, width):
        needed = f"[3,{height},{width}]" if len(shape) == 3 else f"[N,3,{height},{width}]"
        raise ImageTensorError(
            f"{what} has shape {list(shape)} but this model needs {needed}; "
            "pass raw images (paths, PIL images, arrays) to have them resized and normalised"
        )


def _check_tensor_items(items: Sequence[Any], config_size: tuple[int, int]) -> None:
    """Preprocessed tensors in a list: real, [3,H,W], one size, the model's size, finite."""
    shapes: dict[tuple[int, ...], int] = {}
    nonfinite: list[int] = []
    for index, item in enumerate(items):
        if not isinstance(item, torch.Tensor):
            continue
        _refuse_meta(item, f"item {index} of the list")
        if item.dim() != 3:
            raise ImageTensorError(
                f"a preprocessed image tensor in a list must be [3,H,W], got {list(item.shape)} at item {index}"
            )
        shapes.setdefault(tuple(item.shape), index)
        if item.is_floating_point() and not bool(torch.isfinite(item).all()):
            nonfinite.append(index)
    if len(shapes) > 1:
        listed = "; ".join(f"{list(shape)} (first at item {index})" for shape, index in shapes.items())
        raise ImageTensorError(
            f"preprocessed image tensors in one list must all have the same size, found {listed}; "
            "pass raw images to have them resized, or resize the tensors to the model's input size"
        )
    if shapes:
        _check_tensor_size(next(iter(shapes)), config_size, "a preprocessed image tensor in the list")
    refuse_nonfinite_images(nonfinite)


class TorchEngine:
    """The front end's :class:`csdn.images.embedding.Engine` on a PyTorch model, for one modality."""

    def __init__(self, model: EmbeddingModel, modality: str, precision: str, device: torch.device):
        self.model, self.modality, self.precision, self.device = model, modality, precision, device
        config = model.config
        self.preprocessing = Preprocessing(config.image_size, config.mean, config.std, config.interpolation)
        self.feature_dim = config.test_feature_dim

    def inputs(self, images: Any) -> Inputs:
        """Tensors ``[3,H,W]`` / ``[N,3,H,W]`` are preprocessed images; everything else the front end reads."""
        size = self.model.config.image_size
        if isinstance(images, torch.Tensor):
            _refuse_meta(images, "the image tensor")
            if images.dim() not in (3, 4):
                raise ValueError(f"preprocessed image tensors must be [3,H,W] or [N,3,H,W], got {list(images.shape)}")
            single = images.dim() == 3
            _check_tensor_size(images.shape, size, "the image tensor" if single else "the image batch")
            return Inputs(single=single, batch=images.unsqueeze(0) if single else images)
        inputs = read_inputs(images, _TENSORS, lambda item: isinstance(item, torch.Tensor))
        if not inputs.single and inputs.items:
            _check_tensor_items(inputs.items, size)
        return inputs

    def batch(self, images: Any, flip: bool) -> torch.Tensor:
        batch = images if isinstance(images, torch.Tensor) else torch.stack([torch.as_tensor(i) for i in images])
        batch = batch.to(self.device)
        return torch.cat([batch, batch.flip(3)]) if flip else batch

    def run(self, batch: torch.Tensor) -> np.ndarray:
        return inference_features(self.model, batch, self.modality, self.precision).float().cpu().numpy()

    def finite(self, batch: torch.Tensor) -> list[bool]:
        if not batch.is_floating_point() or batch.shape[0] == 0:
            return [True] * batch.shape[0]
        return torch.isfinite(batch).flatten(1).all(dim=1).tolist()


def _check_precision(precision: str, device: torch.device) -> None:
    """Reject unknown names before any image is read; warn where bf16 would only be emulated."""
    if compute_dtype(precision) == torch.bfloat16 and device.type == "cpu" and not cpu_has_bf16():
        warnings.warn(
            "this CPU has no native bfloat16 support (AVX512-BF16 or AMX); precision='bf16' will be "
            "emulated and likely slower than the default precision='fp32'",
            stacklevel=3,
        )


@contextmanager
def _evaluating(model: EmbeddingModel) -> Iterator[None]:
    """Eval mode and no autograd for the call; the model's training flag is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def embed_with_report(
    model: EmbeddingModel, images: Any, modality: str, *, precision: str = "fp32", **options: Any
) -> EmbeddingReport:
    """:func:`embed_images` for many images, also saying which inputs each row belongs to and what was skipped.

    For callers that must label rows (the CLI's manifests): with ``on_error="skip"``,
    row ``r`` belongs to ``report.sources[report.kept[r]]``; ``report.embeddings`` is a
    float32 CPU tensor. ``options`` are :func:`csdn.images.embedding.embed_inputs`'s:
    ``batch_size=32``, ``flip=True``, ``progress=False``, ``bit_depth=None``, ``on_error="raise"``.
    """
    modality = normalize_modality(modality)
    device = next(model.parameters()).device
    _check_precision(precision, device)
    engine = TorchEngine(model, modality, precision, device)
    with _evaluating(model):
        report = embed_inputs(engine, images, modality, **options)
    return replace(report, embeddings=torch.from_numpy(report.embeddings))


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
            :class:`csdn.images.batches.SkippedImage` records); if none can be read,
            ``ImageDecodeError``. Use :func:`embed_with_report` to learn which input each row
            belongs to.

    Raises:
        UnsupportedInputError: (a ``TypeError``) an input type it cannot read; the message lists those it can.
        ImageTensorError: preprocessed tensors of the wrong or mixed sizes, or holding NaN/inf.
        ImageDecodeError: an image that cannot be decoded, or values beyond ``bit_depth``.
        NonFiniteEmbeddingError: embeddings that came out NaN or infinite, naming their images.
        FileNotFoundError: a path that is neither an image file nor a folder, or a folder without images.

    Returns:
        float32 tensor on the CPU: ``[D]`` for one image, ``[N, D]`` for many; rows have unit norm.
    """
    return embed_with_report(model, images, modality, **options).result()
