"""The formats ``export_model`` writes, in one table: format name -> how to save a verified graph.

Every format starts from the same float32 (or int8-quantised) ONNX graph; a format's entry
says how that graph becomes its own files. The runtime side of a format (how the files are
run) is its entry in :data:`csdn.runtime.backends.BACKENDS`, and its file suffixes are in
:data:`csdn.runtime.metadata.ARTIFACT_SUFFIXES`; the three tables are checked to name the
same formats. Adding a format is one entry here and one backend there.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from csdn.runtime.backends import require


@dataclass(frozen=True)
class ExportFormat:
    """How one format saves a graph.

    ``save(onnx_graph, target, precision)`` writes the format's files at ``target`` (its main
    file). ``own_fp16``: the format compresses weights to float16 itself, so the exporter hands
    it the float32 graph instead of converting the ONNX graph first.
    """

    save: Callable[[Path, Path, str], None]
    own_fp16: bool
    modules: tuple[str, ...] = ()  # optional packages it needs beyond onnx, checked before any work


def _save_onnx(graph: Path, target: Path, precision: str) -> None:
    shutil.move(str(graph), target)


def _save_openvino(graph: Path, target: Path, precision: str) -> None:
    ov = require("openvino", "OpenVINO export")
    # fp16 for OpenVINO is its own weight compression; the CPU still computes in float32
    ov.save_model(ov.convert_model(str(graph)), str(target), compress_to_fp16=precision == "fp16")


EXPORT_FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat(_save_onnx, own_fp16=False),
    "openvino": ExportFormat(_save_openvino, own_fp16=True, modules=("openvino",)),
}
DEFAULT_FORMAT = "onnx"
