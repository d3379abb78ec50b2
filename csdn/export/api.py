"""``export_model``: a CSDN model to verified ONNX / OpenVINO graphs, one per modality, in one folder.

The folder is built beside its destination and moved into place only after every graph
passed verification (:mod:`csdn.export.verify`), so a failed or interrupted export leaves no
artifact behind, and an existing folder is replaced only when asked.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from csdn.config import join_provenance
from csdn.errors import ExportError, setting_name
from csdn.export.formats import DEFAULT_FORMAT, EXPORT_FORMATS
from csdn.export.graph import INPUT_NAME, OUTPUT_NAME, check_opset, write_onnx
from csdn.export.quantize import convert_fp16, quantize_int8
from csdn.export.samples import synthetic_people
from csdn.export.settings import DEFAULT_OPSET, MAX_VERIFY_IDENTITIES, MIN_VERIFY_IDENTITIES, VERIFY_IDENTITIES, Floors
from csdn.export.verify import preprocessed, verify
from csdn.images.decode import RESAMPLING, load_image
from csdn.images.files import expand_folders
from csdn.inference.contract import EmbeddingModel
from csdn.io.pretrained import WEIGHTS_SHA256_KEY
from csdn.modality import MODALITIES, normalize_modality
from csdn.runtime.backends import require
from csdn.runtime.embedder import ExportedGraph
from csdn.runtime.metadata import (
    ARTIFACT_SUFFIXES,
    PRECISIONS,
    ArtifactMetadata,
    fields_sha256,
    metadata_path,
    record_files,
)
from csdn.system.fileio import atomic_write_text, refuse_existing
from csdn.version import __version__

CALIBRATION_IMAGES = 32  # per modality
CALIBRATION_BATCH = 8
CALIBRATION_SEED = 20242


@dataclass
class ExportOptions:
    """How to export; validated on construction, before any work."""

    format: str = DEFAULT_FORMAT
    modality: str = "both"
    precision: str = "fp32"
    opset: int = DEFAULT_OPSET
    calibration: Path | None = None  # folder of the user's images for int8 ranges (else synthetic)
    verify_identities: int = VERIFY_IDENTITIES  # synthetic gallery size for the fp16/int8 agreement check
    source: str | None = None  # what the model was loaded from, for the metadata
    weights_sha256: str | None = None  # SHA-256 of the weights file it was loaded from, if known
    floors: Floors | None = None  # fp16/int8 acceptance floors instead of csdn.export.verify.FLOORS
    modalities: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.format not in EXPORT_FORMATS:
            raise ExportError(f"unknown export format {self.format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
        if self.precision not in PRECISIONS:
            raise ExportError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        self.modalities = MODALITIES if self.modality == "both" else (normalize_modality(self.modality),)
        check_opset(self.opset)
        if self.floors is not None and not (0 < self.floors.cosine <= 1 and 0 < self.floors.top1 <= 1):
            raise ExportError(f"floors must lie in (0, 1], got {self.floors}")
        if not MIN_VERIFY_IDENTITIES <= self.verify_identities <= MAX_VERIFY_IDENTITIES:
            raise ExportError(
                f"{setting_name('verify_identities')} must be {MIN_VERIFY_IDENTITIES}..{MAX_VERIFY_IDENTITIES:,}, "
                f"got {self.verify_identities:,}: each identity is two synthetic images drawn and held in memory "
                "for the agreement check (the default, 100, takes under a minute)"
            )
        if self.calibration is not None:
            if self.precision != "int8":
                raise ExportError("calibration images are used by --precision int8 only; drop --calibration")
            self.calibration = Path(self.calibration)
            if not self.calibration.is_dir():
                raise ExportError(
                    f"calibration folder not found: {self.calibration}; pass a folder of images "
                    "(with visible/ and infrared/ subfolders to calibrate each graph on its modality)"
                )


def check_exportable(model: EmbeddingModel) -> None:
    """Refuse models whose preprocessing or placement the exported graph and its runtime cannot reproduce."""
    config = model.config
    if config.interpolation not in RESAMPLING:
        raise ExportError(
            f"the model's config asks for interpolation {config.interpolation!r}, which the exported runtime "
            f"cannot reproduce; set config.interpolation to one of {', '.join(sorted(RESAMPLING))} "
            "(the one the model was trained and evaluated with)"
        )
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ExportError(f"the model is on {device}; export traces it on the CPU: call model.cpu() first")


def state_sha256(model: EmbeddingModel) -> str:
    """SHA-256 over the names and values of every tensor of the model (what the graphs were made from)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def calibration_batches(model: EmbeddingModel, modality: str, folder: Path | None) -> list[np.ndarray]:
    """Preprocessed batches for int8 ranges: ``folder``'s images (its ``modality`` subfolder if any) or synthetic."""
    if folder is None:
        images = synthetic_people(CALIBRATION_IMAGES // 2, modality, model.config.image_size, CALIBRATION_SEED, shots=2)
    else:
        own = folder / modality
        paths = expand_folders([own if own.is_dir() else folder])
        step = max(1, len(paths) // CALIBRATION_IMAGES)  # spread over the folder, not its first files
        images = [load_image(path) for path in paths[::step][:CALIBRATION_IMAGES]]
    batch = preprocessed(model, images)
    return [batch[i : i + CALIBRATION_BATCH] for i in range(0, len(batch), CALIBRATION_BATCH)]


def _write_artifact(
    model: EmbeddingModel, meta: ArtifactMetadata, options: ExportOptions, folder: Path, work: Path
) -> Path:
    """Write the graph ``meta`` describes into ``folder``, its fields' hash inside it; return its main file."""
    modality = meta.modality
    onnx_fp32 = work / f"{modality}.fp32.onnx"
    graph = write_onnx(model, modality, onnx_fp32, options.opset)
    source = onnx_fp32
    if options.precision == "int8":
        source = work / f"{modality}.int8.onnx"
        keep_float = graph.node_prefixes(getattr(model, "int8_float_modules", ()))  # the model's own choice
        batches = calibration_batches(model, modality, options.calibration)
        quantize_int8(onnx_fp32, source, batches, INPUT_NAME, keep_float)
    elif options.precision == "fp16" and not EXPORT_FORMATS[options.format].own_fp16:
        source = work / f"{modality}.fp16.onnx"
        convert_fp16(onnx_fp32, source)
    target = folder / (modality + ARTIFACT_SUFFIXES[options.format][0])
    EXPORT_FORMATS[options.format].save(source, target, options.precision, fields_sha256(meta))
    return target


def _provenance(model: EmbeddingModel) -> dict:
    """The model's provenance record (``model.provenance``); a model without one has an empty record."""
    return getattr(model, "provenance", None) or {}


def _metadata(
    model: EmbeddingModel, modality: str, options: ExportOptions, weights: dict[str, str | None]
) -> ArtifactMetadata:
    config = model.config
    return ArtifactMetadata(
        format=options.format,
        modality=modality,
        precision=options.precision,
        image_size=config.image_size,
        mean=config.mean,
        std=config.std,
        interpolation=config.interpolation,
        feature_dim=config.test_feature_dim,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        opset=options.opset,
        source={"model": options.source, **weights, "config": join_provenance(config, _provenance(model))},
        package_version=__version__,
    )


def export_model(
    model: EmbeddingModel,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    log: Callable[[str], None] = lambda message: None,
    **options,
) -> list[Path]:
    """Export ``model`` into the folder ``out`` and verify it; returns the artifact files written.

    ``options`` are the fields of :class:`ExportOptions`: ``format`` (``"onnx"`` or
    ``"openvino"``), ``modality`` (``"visible"``, ``"infrared"`` or ``"both"``), ``precision``
    (``"fp32"``, ``"fp16"``, ``"int8"``), ``opset``, ``calibration`` (a folder of your images
    for int8), ``verify_identities``, ``floors`` (a :class:`csdn.export.verify.Floors` to accept
    fp16/int8 graphs by other bounds than the defaults; recorded), and for the metadata ``source`` (a name) and
    ``weights_sha256`` (of the weights file). Each graph gets ``<graph>.json`` beside it,
    which also records ``state_sha256``, a SHA-256 over the model's tensors that identifies
    the weights whatever file they came from.

    Raises:
        ExportError: an option or a model the exporter cannot express (before any work).
        MissingDependencyError: the extra for the format is not installed.
        ArtifactError: a graph missed its verification bounds (nothing is left at ``out``).
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
    """
    settings = ExportOptions(**options)
    check_exportable(model)
    require("onnx", "export")
    require("onnxruntime", "export verification")
    for module in EXPORT_FORMATS[settings.format].modules:
        require(module, f"{settings.format} export")
    out = Path(out)
    if not overwrite:
        refuse_existing([out])
    weights = {
        "weights_sha256": settings.weights_sha256 or _provenance(model).get(WEIGHTS_SHA256_KEY),
        "state_sha256": state_sha256(model),
    }
    building = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    work = building / ".work"
    work.mkdir(parents=True)
    was_training = model.training
    model.eval()
    try:
        written = []
        for modality in settings.modalities:
            log(f"exporting the {modality} graph ({settings.format}, {settings.precision})")
            meta = _metadata(model, modality, settings, weights)
            artifact = _write_artifact(model, meta, settings, building, work)
            record_files(meta, artifact)
            log(f"verifying {artifact.name} against the PyTorch model")
            meta.verification = verify(
                model, ExportedGraph(artifact, meta), settings.verify_identities, settings.floors
            )
            atomic_write_text(metadata_path(artifact), meta.to_json() + "\n")
            written.append(out / artifact.name)
        shutil.rmtree(work)
        _move_into_place(building, out)
        return written
    finally:
        model.train(was_training)
        shutil.rmtree(building, ignore_errors=True)


def _move_into_place(building: Path, out: Path) -> None:
    """Replace ``out`` by ``building``; an old ``out`` is moved aside first and removed only afterwards."""
    old = None
    if out.exists() or out.is_symlink():
        old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(out, old)
    os.replace(building, out)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()
