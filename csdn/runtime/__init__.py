"""Running exported CSDN models without torch: ONNX Runtime or OpenVINO, the shared decoding and
preprocessing code, and the metadata checks. Nothing here imports torch, so it runs on a camera box
with ``pip install "csdn-reid[onnx]"`` and no PyTorch (import ``csdn.runtime`` directly)."""

from csdn.runtime.embedder import ExportedEmbedder
from csdn.runtime.metadata import ArtifactMetadata, read_metadata

__all__ = ["ArtifactMetadata", "ExportedEmbedder", "read_metadata"]
