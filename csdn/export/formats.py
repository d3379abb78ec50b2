"""The formats ``export_model`` writes, in one table: format name -> how to save a verified graph.

Every format starts from the same float32 (or int8-quantised) ONNX graph; a format's entry
says how that graph becomes its own files. The runtime side of a format (how the files are
run) is its entry in :data:`csdn.runtime.backends.BACKENDS`, and its file suffixes are in
:data:`csdn.runtime.metadata.ARTIFACT_SUFFIXES`; the three tables are checked to name the
same formats. Adding a format is one entry here and one backend there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from csdn.runtime.backends import require
from csdn.runtime.metadata import GRAPH_KEY


@dataclass(frozen=True)
class ExportFormat:
    """How one format saves a graph.

    ``save(onnx_graph, target, precision, stamp)`` writes the format's files at ``target`` (its main
    file), with ``stamp`` (the SHA-256 of the graph's metadata fields) recorded inside the graph
    under :data:`csdn.runtime.metadata.GRAPH_KEY`, where the runtime looks for it. ``own_fp16``: the format compresses weights to float16 itself, so the exporter hands
    it the float32 graph instead of converting the ONNX graph first.
    """

    save: Callable[[Path, Path, str, str], None]
    own_fp16: bool
    modules: tuple[str, ...] = ()  # optional packages it needs beyond onnx, checked before any work


def _save_onnx(graph: Path, target: Path, precision: str, stamp: str) -> None:
    onnx = require("onnx", "ONNX export")
    proto = onnx.load(str(graph))
    entry = proto.metadata_props.add()
    entry.key, entry.value = GRAPH_KEY, stamp
    onnx.save(proto, str(target))


def _save_openvino(graph: Path, target: Path, precision: str, stamp: str) -> None:
    ov = require("openvino", "OpenVINO export")
    model = ov.convert_model(str(graph))
    model.set_rt_info(stamp, [GRAPH_KEY])
    # fp16 for OpenVINO is its own weight compression; the CPU still computes in float32
    ov.save_model(model, str(target), compress_to_fp16=precision == "fp16")


EXPORT_FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat(_save_onnx, own_fp16=False),
    "openvino": ExportFormat(_save_openvino, own_fp16=True, modules=("openvino",)),
}
DEFAULT_FORMAT = "onnx"
