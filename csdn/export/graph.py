"""The graph that gets exported: preprocessed images of one modality in, the test feature f(x) out.

It is the exact inference path of :mod:`csdn.inference.fast` minus its CPU-specific kernels:
the modality's stem and the shared trunk with every BatchNorm folded into its convolution
(folded in float64, as the PyTorch path folds them), then GeM, its BatchNorm and the
single-query attention pool of :meth:`csdn.model.CSDN.features_from_map`. One graph per
modality rather than one graph with a modality input: a graph-level switch (``If`` or a
select over both stems) would either run both stems or hide the stem inside a subgraph that
ONNX Runtime's quantiser and OpenVINO's optimiser do not look into; two plain graphs stay
exact, quantise fully and share nothing at run time anyway.

The folding is written for CLIP's ModifiedResNet (:data:`csdn.config.CLIP_RESNET_LAYOUT`); a model
of another layout is exported with its own stem and trunk modules as they are (BatchNorms unfolded).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from csdn.config import CLIP_RESNET_LAYOUT
from csdn.errors import ExportError
from csdn.export.settings import DEFAULT_OPSET, OPSETS
from csdn.inference.contract import EmbeddingModel
from csdn.inference.fold import FoldedTower

INPUT_NAME, OUTPUT_NAME = "images", "features"
STEM_NODES = "/stem/"  # prefix of the names of the stem's nodes in the exported graph
FIRST_BLOCK_NODES = "/blocks/blocks.0/"  # ... and of the trunk's first bottleneck block


class FeatureGraph(nn.Module):
    """``[N, 3, H, W]`` preprocessed images -> f(x) ``[N, feature_dim + embed_dim]`` for one modality."""

    def __init__(self, model: EmbeddingModel, modality: str):
        super().__init__()
        self.model = model
        self.stem: nn.Module
        self.blocks: nn.Module
        if model.layout != CLIP_RESNET_LAYOUT:
            self.stem, self.blocks = model.stem_visible if modality == "visible" else model.stem_infrared, model.trunk
            return
        with torch.no_grad():
            tower = FoldedTower(model.stem_visible, model.stem_infrared, model.trunk, torch.float32)
        self.stem, self.blocks = tower.stems[modality], tower.blocks  # graph node names start /stem/, /blocks/

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features_from_map(self.blocks(self.stem(images)))


def check_opset(opset: int) -> int:
    """``opset`` if the exporter writes it, else an :class:`ExportError` naming the range."""
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise ExportError(
            f"unsupported ONNX opset {opset!r}: choose {OPSETS.start}-{OPSETS.stop - 1} "
            f"(default {DEFAULT_OPSET}; 13 or newer is needed for per-channel int8 weights)"
        )
    return opset


def write_onnx(model: EmbeddingModel, modality: str, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """Trace the feature graph of ``modality`` into ``path`` (float32, dynamic batch)."""
    graph = FeatureGraph(model, modality).eval()
    height, width = model.config.image_size
    example = torch.zeros(2, 3, height, width)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
