"""The metadata file written beside every exported model, and the checks made when it is read.

An exported graph is only trustworthy together with what it was verified against: the
preprocessing it expects, the weights it came from, and the parity figures measured
when it was written. ``<artifact>.json`` holds all of that plus the SHA-256 of every
file of the artifact, so a file altered or swapped after export is refused on load
instead of silently giving different embeddings.

The metadata's own fields are bound the other way: their SHA-256 (:func:`fields_sha256`) is
written into the graph itself (ONNX ``metadata_props``, OpenVINO ``rt_info``, key
:data:`GRAPH_KEY`), and the graph's files are hashed into the metadata. Editing a field (the
modality, the mean, the image size) then breaks one of the two, so it is refused on load, also
for a graph loaded on its own. Exports from before this (``format_version`` 1) carry no such
hash; they are still read, with an :class:`UnboundMetadataWarning`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import mmap
import warnings
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csdn.errors import ArtifactError
from csdn.images.decode import RESAMPLING
from csdn.modality import MODALITIES
from csdn.system.fileio import sha256_file

METADATA_FORMAT_VERSION = 2  # 2: the fields' SHA-256 is recorded inside the graph
GRAPH_KEY = "csdn_metadata_sha256"  # the graph's metadata entry holding fields_sha256()
# what fields_sha256() covers: everything known before the graph is written (files and
# verification figures are written after it, and the files bind themselves by their own hashes)
BOUND_FIELDS = (
    "format",
    "modality",
    "precision",
    "image_size",
    "mean",
    "std",
    "interpolation",
    "feature_dim",
    "input_name",
    "output_name",
    "opset",
    "source",
    "package_version",
)
# format -> the files of one artifact, as suffixes of its stem (the first is the file users name)
ARTIFACT_SUFFIXES = {"onnx": (".onnx",), "openvino": (".xml", ".bin")}
PRECISIONS = ("fp32", "fp16", "int8")
REEXPORT = "export the model again with `csdn export` (or restore the artifact and its metadata from one export)"


def metadata_path(artifact: str | Path) -> Path:
    """``visible.onnx`` -> ``visible.onnx.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


class UnboundMetadataWarning(UserWarning):
    """An export from before the metadata's fields were hashed into the graph: edits to them go unnoticed."""


def artifact_files(artifact: str | Path, format: str) -> list[Path]:
    """Every file an artifact consists of: ``x.onnx``, or ``x.xml`` and ``x.bin``."""
    artifact = Path(artifact)
    return [artifact.with_suffix(suffix) for suffix in ARTIFACT_SUFFIXES[format]]


@dataclass
class ArtifactMetadata:
    """What an exported graph computes, what it needs, where it came from and how well it matched."""

    format: str  # "onnx" or "openvino"
    modality: str  # the stem baked into the graph: "visible" or "infrared"
    precision: str  # "fp32", "fp16" or "int8"
    image_size: tuple[int, int]  # (height, width) of the graph's input
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    feature_dim: int  # graph output: f(x), before flip TTA (3072 for RN50)
    input_name: str
    output_name: str
    opset: int
    files: dict[str, str] = field(default_factory=dict)  # file name (beside the metadata) -> SHA-256
    source: dict[str, Any] = field(default_factory=dict)  # model name, weights SHA-256, ...
    package_version: str = ""
    verification: dict[str, Any] = field(default_factory=dict)
    format_version: int = METADATA_FORMAT_VERSION

    def __post_init__(self) -> None:
        self.image_size = tuple(int(v) for v in self.image_size)  # type: ignore[assignment]
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]

    def embedding_dim(self, flip: bool) -> int:
        """Size of the embeddings the runtime returns: f(x), or f(x) and f(flip(x)) concatenated."""
        return self.feature_dim * (2 if flip else 1)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        for key in ("image_size", "mean", "std"):
            data[key] = list(data[key])
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: Path) -> ArtifactMetadata:
        if not isinstance(data, dict):
            raise ArtifactError(f"{where}: not an exported-model metadata file (expected a JSON object); {REEXPORT}")
        version = data.get("format_version", METADATA_FORMAT_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ArtifactError(
                f"{where}: metadata format_version must be a whole number (1, 2, ...), got {version!r} "
                f"({type(version).__name__}); {REEXPORT}"
            )
        if version > METADATA_FORMAT_VERSION:
            raise ArtifactError(
                f"{where}: metadata format_version {version!r} is newer than this csdn-reid reads "
                f"({METADATA_FORMAT_VERSION}); upgrade with `pip install -U csdn-reid`"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing, unknown = sorted(required - set(data)), sorted(set(data) - known)
        if missing or unknown:
            found = "; ".join(
                part
                for part in [missing and f"missing {', '.join(missing)}", unknown and f"unknown {', '.join(unknown)}"]
                if part
            )
            raise ArtifactError(f"{where}: not an exported-model metadata file ({found}); {REEXPORT}")
        try:
            meta = cls(**data)
        except (TypeError, ValueError) as err:
            raise ArtifactError(f"{where}: malformed metadata ({err}); {REEXPORT}") from None
        meta.check(where)
        return meta

    def check(self, where: Path) -> None:
        """Refuse values the runtime cannot act on, naming the field."""
        problems = []
        if self.format not in ARTIFACT_SUFFIXES:
            problems.append(f"format {self.format!r} (known: {', '.join(ARTIFACT_SUFFIXES)})")
        if self.modality not in MODALITIES:
            problems.append(f"modality {self.modality!r} (known: {', '.join(MODALITIES)})")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} (known: {', '.join(PRECISIONS)})")
        if self.interpolation not in RESAMPLING:
            problems.append(f"interpolation {self.interpolation!r} (known: {', '.join(sorted(RESAMPLING))})")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            problems.append(f"image_size {list(self.image_size)}")
        if (
            len(self.mean) != 3
            or len(self.std) != 3
            or not all(map(math.isfinite, self.mean + self.std))
            or min(self.std) <= 0
        ):
            problems.append(f"mean/std {list(self.mean)}/{list(self.std)}")
        if self.feature_dim < 1:
            problems.append(f"feature_dim {self.feature_dim}")
        if problems:
            raise ArtifactError(f"{where}: metadata holds unusable values: {'; '.join(problems)}; {REEXPORT}")


def fields_sha256(meta: ArtifactMetadata) -> str:
    """SHA-256 of the :data:`BOUND_FIELDS` of ``meta``, as canonical JSON (the same before and after a JSON trip)."""
    data = json.loads(meta.to_json())
    canonical = json.dumps({key: data[key] for key in BOUND_FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _varint(data: mmap.mmap, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def _onnx_props(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, read from its protobuf fields without the ``onnx`` package
    (the runtime needs only onnxruntime); the graph itself is skipped over, not parsed."""
    props: dict[str, str] = {}
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        pos = 0
        while pos < len(data):
            key, pos = _varint(data, pos)
            wire = key & 7
            if wire == 0:
                pos = _varint(data, pos)[1]
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            elif wire == 2:
                length, pos = _varint(data, pos)
                if key >> 3 == 14:  # ModelProto.metadata_props: StringStringEntryProto {1: key, 2: value}
                    entry, inner, end = {}, pos, pos + length
                    while inner < end:
                        tag, inner = _varint(data, inner)
                        size, inner = _varint(data, inner)
                        entry[tag >> 3] = data[inner : inner + size].decode("utf-8")
                        inner += size
                    props[entry.get(1, "")] = entry.get(2, "")
                pos += length
            else:
                raise ValueError(f"protobuf wire type {wire}")
        if pos != len(data):
            raise ValueError("truncated")
    return props


def graph_stamp(artifact: str | Path, format: str) -> str | None:
    """The :data:`GRAPH_KEY` entry inside the graph of ``artifact`` (None if it has none)."""
    artifact = Path(artifact)
    try:
        if format == "onnx":
            return _onnx_props(artifact).get(GRAPH_KEY)
        entry = ElementTree.parse(artifact).getroot().find(f"rt_info/{GRAPH_KEY}")
        return None if entry is None else entry.get("value")
    except (ValueError, IndexError, UnicodeDecodeError, ElementTree.ParseError) as err:
        raise ArtifactError(f"{artifact} is not a readable {format} graph ({err}); {REEXPORT}") from None


def _check_stamp(meta: ArtifactMetadata, artifact: Path, where: Path) -> None:
    """Refuse metadata whose fields are not the ones hashed into the graph at export."""
    stamped = graph_stamp(artifact, meta.format)
    if stamped is None and meta.format_version < 2:
        warnings.warn(
            UnboundMetadataWarning(
                f"{where} comes from an export of format_version {meta.format_version}, whose graph does not "
                f"record its metadata, so edits to {where.name} (modality, mean, image size...) cannot be "
                "detected; export the model again to protect it"
            ),
            stacklevel=3,
        )
        return
    if stamped != fields_sha256(meta):
        raise ArtifactError(
            f"{where} does not hold the metadata {artifact.name} was exported with: "
            + (
                "the graph records none"
                if stamped is None
                else "one of its fields (modality, precision, image_size, mean, std, interpolation, feature_dim, "
                "names, opset, source) was changed after export"
            )
            + f", so the graph would run with preprocessing or a modality it was not made for; {REEXPORT}"
        )


def record_files(meta: ArtifactMetadata, artifact: Path) -> None:
    """Store the SHA-256 of each file of ``artifact`` in ``meta.files``."""
    meta.files = {path.name: sha256_file(path) for path in artifact_files(artifact, meta.format)}


def read_metadata(artifact: str | Path) -> ArtifactMetadata:
    """The metadata of ``artifact``, after checking that every file it lists is there, unchanged."""
    artifact = Path(artifact)
    where = metadata_path(artifact)
    if not where.is_file():
        raise ArtifactError(
            f"{artifact} has no metadata file {where.name} beside it; csdn-reid loads only artifacts "
            f"written by `csdn export`, whose metadata records the preprocessing; {REEXPORT}"
        )
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{where}: not valid JSON ({err}); {REEXPORT}") from None
    meta = ArtifactMetadata.from_dict(data, where)
    expected = {path.name for path in artifact_files(artifact, meta.format)}
    if set(meta.files) != expected:
        raise ArtifactError(
            f"{where} lists the files {sorted(meta.files)}, but a {meta.format} artifact named "
            f"{artifact.name} consists of {sorted(expected)}; {REEXPORT}"
        )
    for name, recorded in meta.files.items():
        path = artifact.with_name(name)
        if not path.is_file():
            raise ArtifactError(
                f"{path} is missing; it belongs to {artifact.name} (listed in {where.name}); {REEXPORT}"
            )
        actual = sha256_file(path)
        if actual != recorded:
            raise ArtifactError(
                f"{path} does not match its metadata: its SHA-256 is {actual}, but {where.name} (written with it "
                f"by the export that verified it) records {recorded}. The file was changed or replaced after "
                f"export, so its verification no longer holds; {REEXPORT}"
            )
    _check_stamp(meta, artifact, where)
    return meta
