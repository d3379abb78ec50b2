"""The inference engines an exported graph runs on: ONNX Runtime for ``.onnx``, OpenVINO for ``.xml``.

Each backend is a callable ``float32 [N, 3, H, W] -> float32 [N, D]``. The engines are optional
extras, imported only when a graph is opened, so a missing one is a clear error that names the
extra to install rather than an ``ImportError`` at ``import csdn``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from csdn.errors import MissingDependencyError

Backend = Callable[[np.ndarray], np.ndarray]
EXTRAS = {"onnxruntime": "onnx", "onnx": "onnx", "openvino": "openvino"}


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or a :class:`MissingDependencyError` naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra = EXTRAS.get(module.split(".")[0], module)
        raise MissingDependencyError(
            f"{purpose} needs the Python package {module.split('.')[0]!r}, which is not installed "
            f'({err}); install it with: pip install "csdn-reid[{extra}]"'
        ) from None


def onnxruntime_backend(path: Path, threads: int | None = None) -> Backend:
    """An ONNX Runtime CPU session on ``path``, all graph optimisations on."""
    ort = require("onnxruntime", "running an exported .onnx model")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name

    def run(images: np.ndarray) -> np.ndarray:
        return session.run([output_name], {input_name: images})[0]

    return run


def openvino_backend(path: Path, threads: int | None = None) -> Backend:
    """An OpenVINO CPU model compiled from ``path`` (``.xml`` with its ``.bin``).

    The inference precision is pinned to float32: on CPUs with bfloat16 units OpenVINO would
    otherwise pick bfloat16 on its own, and the artifact's verified figures would not hold.
    """
    ov = require("openvino", "running an exported OpenVINO model")
    config: dict[str, str | int] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()

    def run(images: np.ndarray) -> np.ndarray:
        return np.array(request.infer([images])[compiled.output(0)], dtype=np.float32, copy=True)

    return run


BACKENDS = {"onnx": onnxruntime_backend, "openvino": openvino_backend}
