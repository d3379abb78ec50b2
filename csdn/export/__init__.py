"""Exporting CSDN models for deployment: ONNX and OpenVINO graphs (fp32, fp16, int8), each verified
against the PyTorch model before it is kept, with a metadata file recording how well it matched.
Run them without torch with :class:`csdn.runtime.ExportedEmbedder`. Needs ``csdn-reid[onnx]``
(and ``csdn-reid[openvino]`` for OpenVINO). The names are imported on first use, so the settings
(:mod:`csdn.export.settings`, :mod:`csdn.export.formats`) load without torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from csdn.system.lazy import lazy_attributes

if TYPE_CHECKING:
    from csdn.export.api import ExportOptions, export_model
    from csdn.export.graph import write_onnx
    from csdn.export.settings import DEFAULT_OPSET, FLOORS, Floors
    from csdn.export.verify import FP32_TOLERANCE

_LAZY = {
    "DEFAULT_OPSET": "csdn.export.settings",
    "FLOORS": "csdn.export.settings",
    "Floors": "csdn.export.settings",
    "FP32_TOLERANCE": "csdn.export.verify",
    "ExportOptions": "csdn.export.api",
    "export_model": "csdn.export.api",
    "write_onnx": "csdn.export.graph",
}

__all__ = ["DEFAULT_OPSET", "FLOORS", "FP32_TOLERANCE", "ExportOptions", "Floors", "export_model", "write_onnx"]

__getattr__ = lazy_attributes(__name__, globals(), _LAZY)
