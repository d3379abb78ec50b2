"""An inference-only copy of the image tower with every BatchNorm folded into its convolution.

In eval mode a BatchNorm is a per-channel affine map, so ``bn(conv(x))`` equals one
convolution with rescaled weights and a bias. Folding removes a full pass over
every activation map per BatchNorm. It holds in the CSDN stem too, whose conv/BN
pairs have no ReLU between them: each BN still folds into the convolution right
before it.

On CPUs the folded convolutions run through oneDNN's fused kernels (the ones
TorchInductor uses): bias, ReLU and the residual addition are applied while the
output tile is still in cache, and weights are pre-packed once into oneDNN's
blocked layout for the expected input shape instead of being reordered on every
call. Where those kernels are missing (other devices, other torch builds) the same
arithmetic runs as ``F.conv2d`` followed by in-place add and ReLU.

The folded tower is a snapshot: it does not follow later changes to the model's
weights. :mod:`csdn.inference.fast` owns the cache that decides when to rebuild it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from csdn.errors import WeightsError

Shape = list[int]


@cache
def onednn_fusion_available(dtype: torch.dtype) -> bool:
    """Whether this torch build and CPU run oneDNN's fused convolutions and weight pre-packing in ``dtype``."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    ops = torch.ops.mkldnn
    x = torch.ones(1, 1, 2, 2, dtype=dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.ones(1, 1, 1, 1, dtype=dtype)
    try:
        packed = ops._reorder_convolution_weight(weight, [0, 0], [1, 1], [1, 1], 1, [1, 1, 2, 2])
        y = ops._convolution_pointwise(x, packed, None, [0, 0], [1, 1], [1, 1], 1, "relu", [], "")
        z = ops._convolution_pointwise.binary(x, y, packed, None, [0, 0], [1, 1], [1, 1], 1, "add", 1.0, "relu", [], "")
    except (AttributeError, RuntimeError):  # op missing, or not for this dtype on this CPU
        return False
    return bool(torch.equal(z, torch.full_like(z, 2.0)))


class FoldedConv(nn.Module):
    """A convolution with its BatchNorm folded in; optionally fused with a residual add and a ReLU.

    Weight and bias are plain tensor attributes, not buffers: the tower is a private
    inference snapshot, never saved, moved or trained.
    """

    def __init__(self, conv: Any, bn: Any, dtype: torch.dtype):  # an nn.Conv2d and its nn.BatchNorm2d
        super().__init__()
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
        bias = bn.bias.double() - bn.running_mean.double() * scale
        if conv.bias is not None:
            bias = bias + conv.bias.double() * scale
        if not (bool(torch.isfinite(weight).all()) and bool(torch.isfinite(bias).all())):
            # oneDNN's fused ReLU turns NaN into 0, so such weights would give finite, meaningless embeddings
            raise WeightsError(
                "a convolution and its BatchNorm fold to NaN or infinite weights (a negative or NaN running "
                "variance, or a non-finite weight): the model's weights are corrupted; load or train them again"
            )
        self.weight = weight.to(dtype).contiguous(memory_format=torch.channels_last)
        self.bias = bias.to(dtype)
        self.stride: list[int] = [int(v) for v in conv.stride]
        self.padding: list[int] = [int(v) for v in conv.padding]
        self.fused = False

    def pack(self, input_shape: Shape) -> Shape:
        """Switch to oneDNN's fused kernels, weight pre-packed for ``input_shape``; returns the output shape.

        The packed weight replaces the plain one (no second copy is kept). Other
        input shapes still work (oneDNN reorders as needed), just less fast.
        """
        (kh, kw), (sh, sw), (ph, pw) = self.weight.shape[2:], self.stride, self.padding
        count, _, height, width = input_shape
        output_shape = [count, self.weight.shape[0], (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1]
        self.weight = torch.ops.mkldnn._reorder_convolution_weight(
            self.weight, self.padding, self.stride, [1, 1], 1, list(input_shape)
        )
        self.fused = True
        return output_shape

    def forward(self, x: torch.Tensor, relu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``conv(x) + bias (+ residual)``, then ReLU if ``relu``."""
        if self.fused:
            ops, args = torch.ops.mkldnn, (self.weight, self.bias, self.padding, self.stride, [1, 1], 1)
            if residual is None:
                return ops._convolution_pointwise(x, *args, "relu" if relu else "none", [], "")
            return ops._convolution_pointwise.binary(x, residual, *args, "add", 1.0, "relu" if relu else None, [], "")
        out = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        if residual is not None:
            out = out.add_(residual)
        return F.relu(out, inplace=True) if relu else out


class FoldedStem(nn.Module):
    """CSDN's stem: three folded convolutions back to back, one ReLU, 2x2 average pool."""

    def __init__(self, stem: Any, dtype: torch.dtype):
        super().__init__()
        self.conv1 = FoldedConv(stem.conv1, stem.bn1, dtype)
        self.conv2 = FoldedConv(stem.conv2, stem.bn2, dtype)
        self.conv3 = FoldedConv(stem.conv3, stem.bn3, dtype)

    def pack(self, input_shape: Shape) -> Shape:
        shape = self.conv3.pack(self.conv2.pack(self.conv1.pack(input_shape)))
        return [*shape[:2], shape[2] // 2, shape[3] // 2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv3(self.conv2(self.conv1(x)), relu=True), 2)


class FoldedBottleneck(nn.Module):
    """CLIP's ``Bottleneck`` (anti-aliased: average pool before strided paths) with folded BNs."""

    def __init__(self, block: Any, dtype: torch.dtype):
        super().__init__()
        self.conv1 = FoldedConv(block.conv1, block.bn1, dtype)
        self.conv2 = FoldedConv(block.conv2, block.bn2, dtype)
        self.conv3 = FoldedConv(block.conv3, block.bn3, dtype)
        shortcut = block.downsample  # CLIP's Sequential: "-1" avg pool, "0" conv, "1" BN
        self.downsample = (
            None if shortcut is None else FoldedConv(getattr(shortcut, "0"), getattr(shortcut, "1"), dtype)
        )
        self.stride = block.stride

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.stride) if self.stride > 1 else x

    def pack(self, input_shape: Shape) -> Shape:
        shape = self.conv2.pack(self.conv1.pack(input_shape))
        pooled = [*shape[:2], shape[2] // self.stride, shape[3] // self.stride]
        if self.downsample is not None:
            self.downsample.pack([*input_shape[:2], *pooled[2:]])
        return self.conv3.pack(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x, relu=True), relu=True)
        identity = x if self.downsample is None else self.downsample(self._pool(x))
        return self.conv3(self._pool(out), relu=True, residual=identity)


class FoldedTower(nn.Module):
    """Both modality stems and the shared trunk, folded, with weights in ``dtype``.

    Run it on channels-last input in ``dtype``; it returns the trunk's feature map.
    ``pack_for`` (an input shape ``[N, 3, H, W]``) turns on oneDNN's fused kernels,
    tuned for that shape, where this build and device have them.
    """

    def __init__(
        self,
        stem_visible: Any,
        stem_infrared: Any,
        trunk: Any,
        dtype: torch.dtype,
        pack_for: Sequence[int] | None = None,
    ):
        super().__init__()
        stems = {"visible": FoldedStem(stem_visible, dtype), "infrared": FoldedStem(stem_infrared, dtype)}
        blocks = [
            FoldedBottleneck(block, dtype)
            for layer in (trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4)
            for block in layer
        ]
        self.stems = nn.ModuleDict(stems)
        self.blocks = nn.Sequential(*blocks)
        self._first_conv = blocks[0].conv1  # what `fused` reports on (a FoldedConv holds no parameters)
        on_cpu = trunk.layer1[0].conv1.weight.device.type == "cpu"
        if pack_for is not None and on_cpu and onednn_fusion_available(dtype):
            for stem in stems.values():
                shape = stem.pack(list(pack_for))
            for block in blocks:
                shape = block.pack(shape)

    @property
    def fused(self) -> bool:
        """Whether the oneDNN fused kernels are in use."""
        return self._first_conv.fused

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return self.blocks(self.stems[modality](x))
