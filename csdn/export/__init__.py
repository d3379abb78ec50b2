"""Exporting CSDN models for deployment: ONNX and OpenVINO graphs (fp32, fp16, int8), each verified
against the PyTorch model before it is kept, with a metadata file recording how well it matched.
Run them without torch with :class:`csdn.runtime.ExportedEmbedder`. Needs ``csdn-reid[onnx]``
(and ``csdn-reid[openvino]`` for OpenVINO)."""

from csdn.export.api import ExportOptions, export_model
from csdn.export.graph import DEFAULT_OPSET, write_onnx
from csdn.export.verify import FLOORS, FP32_TOLERANCE, Floors

__all__ = ["DEFAULT_OPSET", "FLOORS", "FP32_TOLERANCE", "ExportOptions", "Floors", "export_model", "write_onnx"]
