"""``csdn export`` (a model to verified ONNX / OpenVINO graphs) and ``csdn export-info`` (an export's
files checked against its metadata, and the verification figures recorded when it was written)."""

from __future__ import annotations

import argparse
import sys

from csdn.cli.embed import add_overwrite_option
from csdn.export.formats import DEFAULT_FORMAT, EXPORT_FORMATS
from csdn.export.settings import DEFAULT_OPSET, FLOORS, OPSETS, VERIFY_IDENTITIES
from csdn.modality import MODALITIES
from csdn.runtime.metadata import PRECISIONS

MODALITY_CHOICES = (*MODALITIES, "both")


def run_export(args: argparse.Namespace) -> int:
    from csdn.export import Floors, export_model
    from csdn.export.api import ExportOptions
    from csdn.hub.loading import load
    from csdn.system.fileio import refuse_existing

    options = dict(
        format=args.format,
        modality=args.modality,
        precision=args.precision,
        opset=args.opset,
        calibration=args.calibration,
        verify_identities=args.verify_identities,
        source=args.model,
        floors=Floors(*args.floors) if args.floors else None,
    )
    ExportOptions(**options)  # bad options fail before the model is loaded
    if not args.overwrite:
        refuse_existing([args.output])
    model = load(args.model, progress=not args.quiet)  # verifies the weights against any pinned hash first
    options["weights_sha256"] = weights_sha256(args.model)
    log = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    for artifact in export_model(model, args.output, overwrite=args.overwrite, log=log, **options):
        print(f"wrote {artifact} (+ {artifact.name}.json): {summary(artifact)}")
    return 0


def weights_sha256(name: str) -> str | None:
    """SHA-256 of the weights ``name`` loads: a local file's own, a registry entry's pinned one (None for a Hub repo)."""
    from pathlib import Path

    from csdn.hub.registry import open_registry
    from csdn.io.pretrained import WEIGHTS_NAME
    from csdn.system.fileio import sha256_file

    path = Path(name)
    if path.is_dir() and (path / WEIGHTS_NAME).is_file():
        return sha256_file(path / WEIGHTS_NAME)
    if path.is_file():
        return sha256_file(path)
    registry = open_registry()
    return registry.get(name).sha256 if name in registry else None


def summary(artifact) -> str:
    """One line of an artifact's verification figures."""
    from csdn.runtime.metadata import read_metadata

    meta = read_metadata(artifact)
    figures = meta.verification
    text = f"{meta.modality} {meta.precision} {meta.format}, max |diff| {figures['parity']['max_abs_diff']:.2e}"
    if "agreement" in figures:
        agreement = figures["agreement"]
        text += (
            f", min cosine {agreement['cosine_min']:.4f}, top-1 agreement {agreement['top1_agreement']:.1%} "
            f"on {agreement['identities']} synthetic identities"
        )
    return text + (" (passed)" if figures.get("passed") else " (NOT passed)")


def run_export_info(args: argparse.Namespace) -> int:
    from csdn.runtime.embedder import find_artifacts

    for artifact in find_artifacts(args.path):
        print(f"{artifact}: files match their metadata; {summary(artifact)}")
    return 0


def _floors_text() -> str:
    return ", ".join(f"{floor.cosine} {floor.top1} for {precision}" for precision, floor in FLOORS.items())


def register(commands) -> list[argparse.ArgumentParser]:
    """Add ``export`` and ``export-info`` to an ``argparse`` sub-command collection."""
    export = commands.add_parser("export", help="export a model to ONNX / OpenVINO, verified against PyTorch")
    export.add_argument("model", help="registry name, hf-hub:org/repo, or a local model")
    export.add_argument(
        "output", help="folder to write the graphs (MODALITY.onnx / MODALITY.xml) and their .json metadata"
    )
    export.add_argument(
        "--format", choices=tuple(EXPORT_FORMATS), default=DEFAULT_FORMAT, help=f"default {DEFAULT_FORMAT}"
    )
    export.add_argument(
        "--modality",
        choices=MODALITY_CHOICES,
        default="both",
        help="which stem(s) to export, one graph each (default both)",
    )
    export.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0], help=f"default {PRECISIONS[0]}")
    export.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {OPSETS.start}-{OPSETS.stop - 1} (default {DEFAULT_OPSET})",
    )
    export.add_argument(
        "--calibration",
        metavar="DIR",
        help="int8: calibrate on your own images (DIR/visible and DIR/infrared if present); "
        "default: synthetic pedestrians",
    )
    export.add_argument(
        "--verify-identities",
        type=int,
        default=VERIFY_IDENTITIES,
        metavar="N",
        help=f"fp16/int8: synthetic identities in the agreement check (default {VERIFY_IDENTITIES})",
    )
    export.add_argument(
        "--floors",
        type=float,
        nargs=2,
        metavar=("COSINE", "TOP1"),
        help="fp16/int8: accept a graph whose smallest cosine and top-1 agreement reach these "
        f"(default {_floors_text()}); recorded in the metadata",
    )
    add_overwrite_option(export, "replace an existing output folder")
    export.add_argument("--quiet", action="store_true", help="no progress messages")
    export.set_defaults(func=run_export)

    info = commands.add_parser("export-info", help="check an export's files against its metadata and show its figures")
    info.add_argument("path", help="an export folder, or one of its .onnx / .xml files")
    info.set_defaults(func=run_export_info)
    return [export, info]
