"""``embed_image``: from user images to modality-invariant, unit-norm embeddings.

Accepts one image or many (paths, PIL images, numpy arrays, or preprocessed float
tensors), decodes and transforms lazily batch by batch so memory stays bounded,
and runs the flipped copy in the same forward pass as the original, through the
folded, channels-last inference tower of :mod:`csdn.inference.fast`.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from csdn.inference.fast import compute_dtype, inference_features
from csdn.modality import normalize_modality
from csdn.preprocess import TestTransform, load_image
from csdn.inference.protocol import EmbeddingModel




def _is_single_image(images: Any) -> bool:
    if isinstance(images, (str, os.PathLike, Image.Image)):
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
    return False


def _batches(images: Any, transform: TestTransform, batch_size: int) -> Iterator[torch.Tensor]:
    """Yield preprocessed ``[B,3,H,W]`` float batches, decoding only one batch at a time."""
    if isinstance(images, torch.Tensor):
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size]
        return
    items: Sequence[Any] = list(images) if isinstance(images, np.ndarray) else images
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        tensors = []
        for item in chunk:
            if isinstance(item, torch.Tensor):
                if item.dim() != 3:
                    raise ValueError(f"a preprocessed image tensor in a list must be [3,H,W], got {list(item.shape)}")
                tensors.append(item)
            else:
                tensors.append(transform(load_image(item)))
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
) -> torch.Tensor:
    """Embed images of one modality.

    Args:
        images: one image (path, ``PIL.Image`` in any mode, numpy array HxW or HxWxC
            of uint8/uint16/float, or a preprocessed float tensor ``[3,H,W]``), or
            many (a list of those, a numpy batch ``NxHxWxC``, or a tensor ``[N,3,H,W]``).
        modality: ``"visible"`` or ``"infrared"`` (aliases: rgb/vis, ir/thermal/nir).
        flip: flip test-time augmentation; the embedding is
            ``concat(f(x), f(flip(x)))`` scaled to unit norm, else ``f(x)`` scaled to unit norm.
        precision: ``"fp32"`` (default; equals ``image_features`` to float rounding) or
            ``"bf16"`` (bfloat16 convolutions, float32 pooling and normalisation: several
            times faster on CPUs with AMX / AVX512-BF16 and on GPUs, embeddings within
            ~1e-2 cosine of fp32; see :mod:`csdn.inference.fast`).

    Returns:
        float32 tensor on the CPU: ``[D]`` for one image, ``[N, D]`` for many; rows have unit norm.
    """
    modality = normalize_modality(modality)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    single = _is_single_image(images)
    if single:
        images = images.unsqueeze(0) if isinstance(images, torch.Tensor) else [images]
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
            for batch in _batches(images, transform, batch_size):
                batch = batch.to(device)
                count = batch.shape[0]
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
