"""Reduced-precision ONNX graphs: int8 by ONNX Runtime's static quantisation, fp16 by weight conversion.

int8 is post-training static quantisation in QDQ form (QuantizeLinear/DequantizeLinear pairs
around each convolution), the form ONNX Runtime fuses into integer kernels and OpenVINO
reads as its own int8 graph. Only the trunk's convolutions are quantised, weights per
output channel (int8, symmetric) and activations per tensor (uint8, ranges from
calibration images): they carry almost all of the arithmetic. The tail (GeM's powers,
the attention pool's softmax, the normalisations) stays float32, where int8 rounding would
cost accuracy for no speed, and so do the convolutions the exporter names in ``keep_float``:
the modules a model class declares in ``int8_float_modules``. CSDN's are the modality stems and
the trunk's first bottleneck block (~8% of RN50's work): the stem sees raw pixels whose
statistics differ most between modalities, and the first block's rounding error travels through
every later layer. On the bundled model (500 synthetic identities per modality) keeping them in
float32 lifted top-1 agreement with fp32 from 95.0% to 97.0% (infrared) and the smallest cosine
from 0.963 to 0.996 (visible).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from csdn.runtime.backends import require

QUANTISED_OPS = ["Conv"]


class _Calibration:
    """ONNX Runtime's calibration reader protocol over preprocessed batches."""

    def __init__(self, batches: list[np.ndarray], input_name: str):
        self.input_name = input_name
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}


def quantize_int8(
    source: Path, target: Path, calibration: list[np.ndarray], input_name: str, keep_float: Sequence[str] = ()
) -> None:
    """Write the int8 QDQ version of the float32 graph ``source`` to ``target``.

    ``calibration`` is a list of preprocessed float32 batches ``[B, 3, H, W]``; the
    activation ranges are their minimum and maximum. Convolutions whose node names start with one
    of ``keep_float`` (:meth:`csdn.export.graph.FeatureGraph.node_prefixes`) stay float32.
    """
    quantization = require("onnxruntime.quantization", "int8 export")
    onnx = require("onnx", "int8 export")
    prepared = target.with_name(target.stem + ".prepared.onnx")
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantiser's advice goes to the root logger
    try:
        # shape inference and graph clean-up first, as ONNX Runtime recommends before quantising
        quantization.shape_inference.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        kept_float = [
            node.name
            for node in onnx.load(str(prepared), load_external_data=False).graph.node
            if node.op_type == "Conv" and node.name.startswith(tuple(keep_float))
        ]
        quantization.quantize_static(
            str(prepared),
            str(target),
            _Calibration(calibration, input_name),
            quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=QUANTISED_OPS,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
            nodes_to_exclude=kept_float,
        )
    finally:
        logging.getLogger().setLevel(quiet)
        prepared.unlink(missing_ok=True)


def convert_fp16(source: Path, target: Path) -> None:
    """Write ``source`` with float16 weights and arithmetic to ``target``; inputs and outputs stay float32."""
    onnx = require("onnx", "fp16 export")
    float16 = require("onnxruntime.transformers.float16", "fp16 export")
    model = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))
