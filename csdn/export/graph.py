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
Either way the graph knows which of its modules computes which of the model's (:attr:`FeatureGraph.sources`),
so a model's own module names (``int8_float_modules``) say which graph nodes int8 keeps in float32.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import cast

import torch
from torch import nn

from csdn.config import CLIP_RESNET_LAYOUT
from csdn.errors import ExportError
from csdn.export.settings import DEFAULT_OPSET, OPSETS
from csdn.inference.contract import EmbeddingModel
from csdn.inference.fold import FoldedTower

INPUT_NAME, OUTPUT_NAME = "images", "features"


def _scope_name(qualified: str) -> str:
    """What the TorchScript ONNX exporter calls a module in node names: its qualified name from the last
    part that is not an index on (``blocks.0`` stays ``blocks.0``, ``blocks.0.conv1`` becomes ``conv1``)."""
    atoms = qualified.split(".")
    named = [i for i, atom in enumerate(atoms) if not atom.isnumeric()]
    return ".".join(atoms[named[-1] :]) if named else qualified


def _within(name: str, prefixes: Iterable[str]) -> bool:
    """Whether the module ``name`` is one of ``prefixes`` or inside one (``trunk.layer1.0.conv1`` in ``trunk``)."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


class FeatureGraph(nn.Module):
    """``[N, 3, H, W]`` preprocessed images -> f(x) ``[N, feature_dim + embed_dim]`` for one modality."""

    def __init__(self, model: EmbeddingModel, modality: str):
        super().__init__()
        self.model = model
        self.stem: nn.Module
        self.blocks: nn.Module
        stem_name = f"stem_{modality}"
        self.sources: dict[str, nn.Module] = {}  # the model's module name -> the graph module computing it
        if model.layout != CLIP_RESNET_LAYOUT:
            self.stem = model.stem_visible if modality == "visible" else model.stem_infrared
            self.blocks = model.trunk
            for name, top in ((stem_name, self.stem), ("trunk", self.blocks)):
                self.sources.update({f"{name}.{sub}".rstrip("."): module for sub, module in top.named_modules()})
            return
        with torch.no_grad():
            tower = FoldedTower(model.stem_visible, model.stem_infrared, model.trunk, torch.float32)
        self.stem, self.blocks = tower.stems[modality], tower.blocks  # graph node names start /stem/, /blocks/
        trunk_blocks = [
            f"trunk.{name}.{index}"
            for name, layer in model.trunk.named_children()
            for index in range(len(list(layer.children())))  # FoldedTower's order: layer1's blocks, then layer2's, ...
        ]
        self.sources = {stem_name: self.stem, "trunk": self.blocks, **dict(zip(trunk_blocks, self.blocks))}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features_from_map(self.blocks(self.stem(images)))

    def node_prefixes(self, modules: Iterable[str]) -> tuple[str, ...]:
        """The ONNX node-name prefixes (``/stem/``, ``/blocks/blocks.0/``) of the graph modules computing the
        model's ``modules`` (module names or prefixes of them, e.g. ``trunk.layer1.0``); a module this
        modality's graph does not run (the other stem) has none; a name of no module of the model is an error."""
        wanted = tuple(modules)
        known = [name for name, _ in cast(nn.Module, self.model).named_modules()]
        unknown = [prefix for prefix in wanted if not any(_within(name, [prefix]) for name in known)]
        if unknown:
            raise ExportError(
                f"{type(self.model).__name__}.int8_float_modules names {', '.join(map(repr, unknown))}, which "
                "is no module of the model; name its own modules (e.g. 'stem_visible', 'trunk')"
            )
        chosen = [graph_module for name, graph_module in self.sources.items() if _within(name, wanted)]
        qualified = {id(module): name for name, module in self.named_modules()}  # first names, as the exporter's
        prefixes = []
        for top in (self.stem, self.blocks):  # the modules forward calls, and inside them their children
            for relative, module in top.named_modules():
                if any(module is graph_module for graph_module in chosen):
                    atoms = relative.split(".") if relative else []
                    chain = [top, *(top.get_submodule(".".join(atoms[: k + 1])) for k in range(len(atoms)))]
                    prefixes.append("/" + "/".join(_scope_name(qualified[id(m)]) for m in chain) + "/")
        return tuple(p for p in dict.fromkeys(prefixes) if not any(p != q and p.startswith(q) for q in prefixes))


def check_opset(opset: int) -> int:
    """``opset`` if the exporter writes it, else an :class:`ExportError` naming the range."""
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise ExportError(
            f"unsupported ONNX opset {opset!r}: choose {OPSETS.start}-{OPSETS.stop - 1} "
            f"(default {DEFAULT_OPSET}; 13 or newer is needed for per-channel int8 weights)"
        )
    return opset


def write_onnx(model: EmbeddingModel, modality: str, path: Path, opset: int = DEFAULT_OPSET) -> FeatureGraph:
    """Trace the feature graph of ``modality`` into ``path`` (float32, dynamic batch); return the traced graph."""
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
    return graph
