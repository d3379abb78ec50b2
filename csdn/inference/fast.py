"""The fast inference path behind ``embed_image``: folded tower, channels-last, cached per model.

``inference_features`` returns the same test feature f(x) as ``CSDN.image_features``
in eval mode (to float rounding, ~1e-6) but does less work: BatchNorms are folded
into the convolutions and fused with ReLU and the residual adds (:mod:`csdn.inference.fold`),
activations are channels-last (the layout oneDNN convolutions run fastest in), and
the attention pool evaluates only its one used query (:mod:`csdn.model.pool`). The folding is
written for CLIP's ModifiedResNet (:data:`csdn.config.CLIP_RESNET_LAYOUT`); a model of another
layout runs its own ``image_features`` here (under ``inference_mode``, bf16 by autocast).
Images go through in chunks small enough that the largest activation stays near
``ACTIVATION_BUDGET`` bytes: this keeps the working set in cache and every
allocation below the size at which the C allocator would hand memory back to the
OS and page-fault it in anew on the next call.

The folded tower is built on first use and cached per model and dtype. A cached
tower is reused only while every tensor it was folded from is the very same tensor
object, at the same address, with the same version counter; any in-place update
(an optimiser step, ``load_state_dict``, a training-mode forward that moves the
BatchNorm statistics, ``nn.init``), replacement or device/dtype move of a stem or
trunk weight therefore triggers a rebuild. The one change it cannot see is a write
through ``tensor.data`` (which bypasses version counting); call
:func:`clear_cache` after such surgery.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from csdn.config import CLIP_RESNET_LAYOUT
from csdn.images.embedding import TORCH_PRECISIONS
from csdn.inference.contract import EmbeddingModel
from csdn.inference.fold import FoldedTower
from csdn.modality import normalize_modality

COMPUTE_DTYPES = dict(zip(TORCH_PRECISIONS, (torch.float32, torch.bfloat16), strict=True))
ACTIVATION_BUDGET = 16 * 2**20  # bytes of the largest activation map of one chunk of images


@dataclass
class _CachedTower:
    sources: list[weakref.ref]
    stamps: list[tuple[int, int]]  # (version counter, data address) of each source at fold time
    tower: FoldedTower

    def is_current(self, tensors: list[torch.Tensor]) -> bool:
        return len(tensors) == len(self.sources) and all(
            ref() is tensor and stamp == _stamp(tensor)
            for ref, stamp, tensor in zip(self.sources, self.stamps, tensors)
        )


_CACHE: weakref.WeakKeyDictionary[EmbeddingModel, dict[torch.dtype, _CachedTower]] = weakref.WeakKeyDictionary()


def _stamp(tensor: torch.Tensor) -> tuple[int, int]:
    return tensor._version, tensor.data_ptr()


def _folded_sources(model: EmbeddingModel) -> list[torch.Tensor]:
    """Every parameter and buffer the folded tower is computed from."""
    tensors: list[torch.Tensor] = []
    for module in (model.stem_visible, model.stem_infrared, model.trunk):
        tensors.extend(module.parameters())
        tensors.extend(module.buffers())
    return tensors


def compute_dtype(precision: str) -> torch.dtype:
    """The tower's dtype for a ``precision`` name; a clear error for unknown names."""
    if precision not in COMPUTE_DTYPES:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[precision]


def chunk_size(model: EmbeddingModel, dtype: torch.dtype) -> int:
    """Images per tower call, so that the largest activation map stays within ``ACTIVATION_BUDGET``.

    The largest maps are the stem's last convolution (``width`` channels at H/2 x W/2)
    and layer1's output (``4 * width`` channels at H/4 x W/4): ``width * H * W / 4`` values each.
    """
    height, width = model.config.image_size
    largest = model.config.vision_width * height * width // 4 * torch.finfo(dtype).bits // 8
    return max(1, ACTIVATION_BUDGET // largest)


def folded_tower(model: EmbeddingModel, dtype: torch.dtype = torch.float32) -> FoldedTower:
    """The model's stems and trunk with BatchNorms folded, weights in ``dtype``; cached while valid."""
    sources = _folded_sources(model)
    per_model = _CACHE.setdefault(model, {})
    cached = per_model.get(dtype)
    if cached is None or not cached.is_current(sources):
        chunk_shape = [chunk_size(model, dtype), 3, *model.config.image_size]
        with torch.no_grad():
            tower = FoldedTower(model.stem_visible, model.stem_infrared, model.trunk, dtype, pack_for=chunk_shape)
        cached = _CachedTower([weakref.ref(t) for t in sources], [_stamp(t) for t in sources], tower.eval())
        per_model[dtype] = cached
    return cached.tower


def clear_cache(model: EmbeddingModel) -> None:
    """Drop the model's folded towers (frees their memory; the next call rebuilds them)."""
    _CACHE.pop(model, None)


def inference_features(model: EmbeddingModel, x: torch.Tensor, modality: str, precision: str = "fp32") -> torch.Tensor:
    """f(x) ``[N, feature_dim + embed_dim]`` with eval-mode semantics, via the folded tower.

    ``precision="fp32"`` matches ``model.image_features`` to float rounding.
    ``"bf16"`` runs the convolutions in bfloat16 (weights folded in float64, then
    rounded once) and keeps the sensitive tail in float32: GeM, BatchNorm, the
    attention pool's softmax and the L2 normalisations.
    """
    dtype = compute_dtype(precision)
    if model.training:
        raise RuntimeError("inference_features uses BatchNorm running statistics; call model.eval() first")
    model.check_images(x)
    modality = normalize_modality(modality)
    if model.layout != CLIP_RESNET_LAYOUT:
        return _unfolded_features(model, x, modality, dtype)
    tower = folded_tower(model, dtype)
    with torch.inference_mode():
        features = []
        for chunk in x.split(chunk_size(model, dtype)):
            fmap = tower(chunk.to(dtype=dtype, memory_format=torch.channels_last), modality)
            features.append(model.features_from_map(fmap.float()))
        return torch.cat(features)


def _unfolded_features(model: EmbeddingModel, x: torch.Tensor, modality: str, dtype: torch.dtype) -> torch.Tensor:
    """f(x) by the model's own modules, for a layout the folding does not know (chunked as the tower is)."""
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
        return torch.cat([model.image_features(chunk, modality).float() for chunk in x.split(chunk_size(model, dtype))])
