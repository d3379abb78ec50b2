"""Embeddings files: what ``csdn embed`` writes and ``csdn match`` reads, as a Python API.

A file is ``NAME.safetensors`` (one tensor ``embeddings`` ``[N, D]``) or ``NAME.npy``
(the same array), with a manifest named after the whole file name beside it (``e.npy`` ->
``e.npy.json``, ``e.safetensors`` -> ``e.safetensors.json``, so the two never share one)::

    {"format": "csdn-embeddings", "version": 1, "model": "sysu", "modality": "infrared",
     "flip": true, "precision": "fp32", "dtype": "float32", "count": N, "dim": D,
     "paths": ["cam3/0001.jpg", ...], "file": "e.npy", "sha256": "9f86d0..."}

``dtype`` is how the rows are stored: ``float32`` (default), or ``float16`` / ``bfloat16`` at half
the size (``csdn.match`` still returns the exact float32 ranking of the stored values). numpy
has no bfloat16, so a bfloat16 ``.npy`` holds the raw 16-bit patterns as ``uint16`` and only its
manifest says what they are; such a file is never read without its manifest.

``file`` and ``sha256`` (of the whole array file) bind the manifest to its array: a manifest left
over from, or copied from, another run with the same N and D would otherwise label these rows with
that run's paths, modality and model. Loading checks the hash (one streamed read of the file) and
refuses a mismatch; a manifest from before these fields is still read, with a warning.

Row ``i`` embeds ``paths[i]``. A ``.npy`` or ``.safetensors`` file without a manifest is read
too, its rows labelled ``"0"``, ``"1"``, ... Files written before this naming (manifest
``NAME.json``) are still read: that manifest is used when the new one is absent.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from csdn.errors import EmbeddingsFileError
from csdn.retrieval.checks import STORAGE_DTYPE_NAMES
from csdn.system.fileio import atomic_write, atomic_write_text, refuse_existing, sha256_file

__all__ = [
    "Embeddings",
    "save_embeddings",
    "load_embeddings",
    "manifest_path",
    "legacy_manifest_path",
    "check_embeddings_path",
    "check_same_model",
    "MixedModelsWarning",
    "UncheckedManifestWarning",
    "is_embeddings_file",
    "storage_dtype",
    "EMBEDDINGS_FORMAT",
    "EMBEDDINGS_VERSION",
    "EMBEDDINGS_SUFFIXES",
    "STORAGE_DTYPES",
]

EMBEDDINGS_FORMAT = "csdn-embeddings"
EMBEDDINGS_VERSION = 1
EMBEDDINGS_SUFFIXES = (".safetensors", ".npy")
TENSOR_NAME = "embeddings"  # the one tensor of a .safetensors embeddings file
_SCAN_ELEMENTS = 1 << 24  # rows checked for NaN/inf at a time: 64 MiB of float32
STORAGE_DTYPES = dict(zip(STORAGE_DTYPE_NAMES, (torch.float32, torch.float16, torch.bfloat16), strict=True))
_NPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.uint16}  # how .npy holds each


class UncheckedManifestWarning(UserWarning):
    """A manifest from before csdn-reid recorded its array's hash: read, but not proven to describe the array."""


class MixedModelsWarning(UserWarning):
    """Query and gallery embeddings whose manifests name different models."""


@dataclass
class Embeddings:
    """``vectors[i]`` (an ``[N, D]`` float32, float16 or bfloat16 tensor) embeds ``paths[i]``; the rest is how
    they were made."""

    vectors: torch.Tensor
    paths: list[str] = field(default_factory=list)
    model: str | None = None
    modality: str | None = None
    flip: bool | None = None
    precision: str | None = None

    @property
    def count(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return self.count


def manifest_path(path: str | os.PathLike) -> Path:
    """The manifest beside an embeddings file: the whole file name plus ``.json`` (``e.npy`` -> ``e.npy.json``)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def legacy_manifest_path(path: str | os.PathLike) -> Path:
    """Where csdn-reid before 0.x put the manifest (``e.npy`` -> ``e.json``); read only when the new one is absent."""
    return Path(path).with_suffix(".json")


def storage_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """The torch dtype a ``dtype=`` / ``--dtype`` value names (None: float32); ``ValueError`` listing the choices."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in STORAGE_DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in STORAGE_DTYPES:
        return STORAGE_DTYPES[dtype]
    raise ValueError(f"unknown embeddings dtype {dtype!r}; choose one of {', '.join(STORAGE_DTYPES)}")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def is_embeddings_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an embeddings file by its suffix (``.safetensors`` / ``.npy``), not images."""
    return Path(path).suffix.lower() in EMBEDDINGS_SUFFIXES


def check_embeddings_path(path: str | os.PathLike) -> Path:
    """``path`` as a ``Path``; ``ValueError`` unless it ends in ``.safetensors`` or ``.npy``."""
    path = Path(path)
    if not is_embeddings_file(path):
        raise ValueError(f"embeddings file {path} must end in {' or '.join(EMBEDDINGS_SUFFIXES)}")
    return path


# ---------------------------------------------------------------------------- checks shared by save and load
def _first_nonfinite_row(vectors: torch.Tensor) -> int | None:
    """Index of the first row holding NaN or inf, read a block of rows at a time (a memory-mapped file stays so)."""
    rows = max(1, _SCAN_ELEMENTS // max(1, vectors.shape[1]))
    for start in range(0, vectors.shape[0], rows):
        bad = ~torch.isfinite(vectors[start : start + rows]).all(dim=1)
        if bool(bad.any()):
            return start + int(bad.nonzero()[0, 0])
    return None


def _check_rows(vectors: torch.Tensor, paths: Sequence[str], where: str) -> None:
    if vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise EmbeddingsFileError(f"{where} holds no embeddings (shape {list(vectors.shape)})")
    row = _first_nonfinite_row(vectors)
    if row is not None:
        label = "" if paths[row] == str(row) else f" ({paths[row]})"
        raise EmbeddingsFileError(
            f"{where}: row {row}{label} holds NaN or infinite values, which match nothing; "
            "embed that image again, or leave it out"
        )


# ---------------------------------------------------------------------------- saving
def _as_float_matrix(embeddings: Any, dtype: torch.dtype) -> torch.Tensor:
    """A CPU ``[N, D]`` tensor of ``dtype`` from a tensor or array of floats."""
    tensor = embeddings.detach() if isinstance(embeddings, torch.Tensor) else torch.from_numpy(np.asarray(embeddings))
    if not tensor.is_floating_point():
        raise ValueError(f"embeddings must be floating-point vectors, got dtype {tensor.dtype}")
    if tensor.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {list(tensor.shape)}")
    return tensor.cpu().to(dtype).contiguous()


def _write_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a file object: np.save would append ".npy" to a temporary name
        np.save(handle, array)


def save_embeddings(
    path: str | os.PathLike,
    embeddings: Any,
    *,
    paths: Sequence[str | os.PathLike] | None = None,
    model: str | None = None,
    modality: str | None = None,
    flip: bool | None = None,
    precision: str | None = None,
    overwrite: bool = True,
    dtype: str | torch.dtype | None = None,
) -> Path:
    """Write ``embeddings`` (``[N, D]`` floats: tensor, array, or an :class:`Embeddings`) and its manifest.

    ``paths[i]`` names what row ``i`` embeds (default: ``"0"``, ``"1"``, ...); ``model``,
    ``modality`` (any alias, stored as ``"visible"`` / ``"infrared"``), ``flip`` and ``precision``
    record how they were made. Keywords override the fields of an :class:`Embeddings`. ``dtype``
    (``"float32"`` default, ``"float16"``, ``"bfloat16"``) is how the rows are stored; the
    array and the manifest are each replaced atomically. With ``overwrite=False`` an
    existing ``path`` or manifest raises :class:`csdn.errors.OutputExistsError` and nothing is
    written. No other file is touched. Returns ``path``.
    """
    path = check_embeddings_path(path)
    if not overwrite:
        refuse_existing([path, manifest_path(path)], "--overwrite (overwrite=True in Python)")
    if isinstance(embeddings, Embeddings):
        paths = embeddings.paths if paths is None else paths
        model = embeddings.model if model is None else model
        modality = embeddings.modality if modality is None else modality
        flip = embeddings.flip if flip is None else flip
        precision = embeddings.precision if precision is None else precision
        embeddings = embeddings.vectors
    vectors = _as_float_matrix(embeddings, storage_dtype(dtype))
    labels = [str(i) for i in range(vectors.shape[0])] if paths is None else [os.fspath(p) for p in paths]
    if len(labels) != vectors.shape[0]:
        raise ValueError(f"{len(labels)} paths for {vectors.shape[0]} embeddings: give one path per row")
    if modality is not None:
        from csdn.modality import normalize_modality

        modality = normalize_modality(modality)
    where = "the embeddings to save" + ("" if vectors.dtype == torch.float32 else f" (as {_dtype_name(vectors.dtype)})")
    _check_rows(vectors, labels, where)
    manifest = {
        "format": EMBEDDINGS_FORMAT,
        "version": EMBEDDINGS_VERSION,
        "model": model,
        "modality": modality,
        "flip": flip,
        "precision": precision,
        "dtype": _dtype_name(vectors.dtype),
        "count": vectors.shape[0],
        "dim": vectors.shape[1],
        "paths": labels,
        "file": path.name,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        stored = (
            vectors.view(torch.int16).numpy().view(np.uint16) if vectors.dtype == torch.bfloat16 else vectors.numpy()
        )
        atomic_write(path, lambda temp: _write_npy(temp, stored))
    else:
        from safetensors.torch import save_file

        atomic_write(path, lambda temp: save_file({TENSOR_NAME: vectors}, str(temp), metadata={"format": "pt"}))
    manifest["sha256"] = sha256_file(path)
    atomic_write_text(manifest_path(path), json.dumps(manifest, indent=1) + "\n")
    return path


# ---------------------------------------------------------------------------- loading
_WRITERS = "`csdn embed` or csdn.retrieval.save_embeddings"


def _not_floats(path: Path, dtype: Any) -> EmbeddingsFileError:
    return EmbeddingsFileError(
        f"{path} holds {dtype} values, but embeddings are floating-point vectors [N, D] (float32, as {_WRITERS} "
        "writes them); convert the array to float32, or embed the images again"
    )


def _read_npy(path: Path) -> torch.Tensor:
    try:
        # copy-on-write memory map: matching streams the rows, so a gallery may exceed memory
        array = np.load(path, mmap_mode="c", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise EmbeddingsFileError(f"{path} is not a readable .npy array ({err})") from err
    bf16_bits = array.dtype == np.uint16 and _stated_dtype(path) == "bfloat16"
    if array.dtype == np.uint16 and _find_manifest(path) is None:
        raise EmbeddingsFileError(
            f"{path} holds uint16 values and has no manifest ({manifest_path(path).name}) beside it: a bfloat16 "
            "embeddings file stores its rows as uint16 and only its manifest says so; put the manifest written with "
            "it back beside it, or embed the images again"
        )
    if not (np.issubdtype(array.dtype, np.floating) or bf16_bits):
        raise _not_floats(path, array.dtype)
    if array.ndim != 2:
        raise EmbeddingsFileError(f"{path} holds an array of shape {list(array.shape)}; embeddings are [N, D]")
    if bf16_bits:
        return torch.from_numpy(np.ascontiguousarray(array.astype(array.dtype.newbyteorder("="), copy=False))).view(
            torch.bfloat16
        )
    if array.dtype not in (np.float32, np.float16) or not array.dtype.isnative:
        array = np.ascontiguousarray(array, dtype=np.float32)
    return torch.from_numpy(array)


def _find_manifest(path: Path) -> Path | None:
    """The manifest of ``path``: ``NAME.npy.json``, else the older ``NAME.json``, else None."""
    for manifest_file in (manifest_path(path), legacy_manifest_path(path)):
        if manifest_file.is_file():
            return manifest_file
    return None


def _stated_dtype(path: Path) -> Any:
    """The ``dtype`` field of ``path``'s manifest, if it has one (read before the array's own checks)."""
    manifest_file = _find_manifest(path)
    if manifest_file is None:
        return None
    try:
        return json.loads(manifest_file.read_text(encoding="utf-8")).get("dtype")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None  # reported by _read_manifest


def _read_safetensors(path: Path) -> torch.Tensor:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            names = list(handle.keys())
            if names != [TENSOR_NAME]:
                raise EmbeddingsFileError(
                    f"{path} holds {sorted(names)}, not the one {TENSOR_NAME!r} tensor {_WRITERS} writes"
                )
            stored = handle.get_slice(TENSOR_NAME)
            dtype, shape = stored.get_dtype(), stored.get_shape()
            if not dtype.startswith(("F", "BF")):
                raise _not_floats(path, dtype)
            if len(shape) != 2:
                raise EmbeddingsFileError(f"{path} holds a tensor of shape {list(shape)}; embeddings are [N, D]")
            tensor = handle.get_tensor(TENSOR_NAME)
            return tensor if tensor.dtype in _NPY_DTYPES else tensor.float()
    except (SafetensorError, OSError) as err:
        raise EmbeddingsFileError(f"{path} is not a readable safetensors file ({err})") from err


def _read_manifest(path: Path, vectors: torch.Tensor) -> dict[str, Any]:
    """The manifest's fields, checked against the array they describe."""
    manifest_file = _find_manifest(path)
    count, dim = vectors.shape
    if manifest_file is None:
        return {"paths": [str(i) for i in range(count)]}
    redo = f"embed the images again (or delete {manifest_file.name} to label rows by index)"
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EmbeddingsFileError(f"{manifest_file} is not JSON ({err}); {redo}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != EMBEDDINGS_FORMAT:
        raise EmbeddingsFileError(f"{manifest_file} is not a {EMBEDDINGS_FORMAT} manifest; {redo}")
    version = manifest.get("version", EMBEDDINGS_VERSION)
    if not isinstance(version, int) or version > EMBEDDINGS_VERSION:
        raise EmbeddingsFileError(
            f"{manifest_file} has format version {version!r}; this csdn-reid reads up to "
            f"{EMBEDDINGS_VERSION}: upgrade csdn-reid"
        )
    paths = manifest.get("paths")
    stated = {"count": manifest.get("count", count), "dim": manifest.get("dim", dim)}
    if not isinstance(paths, list) or len(paths) != count or stated != {"count": count, "dim": dim}:
        listed = len(paths) if isinstance(paths, list) else "no"
        raise EmbeddingsFileError(
            f"{manifest_file} does not describe {path} ({count} rows of {dim}): it lists {listed} paths, "
            f"count {stated['count']}, dim {stated['dim']}; {redo}"
        )
    stated_dtype = manifest.get("dtype")
    if stated_dtype is not None and stated_dtype != _dtype_name(vectors.dtype) and vectors.dtype in _NPY_DTYPES:
        raise EmbeddingsFileError(
            f"{manifest_file} says its rows are {stated_dtype} but {path} holds {_dtype_name(vectors.dtype)}: the "
            f"two files do not belong together; write both again (csdn embed --dtype {_dtype_name(vectors.dtype)}), "
            "or restore the matching manifest"
        )
    _check_binding(manifest, manifest_file, path)
    return {key: manifest.get(key) for key in ("model", "modality", "flip", "precision")} | {
        "paths": [str(p) for p in paths]
    }


def _check_binding(manifest: dict[str, Any], manifest_file: Path, path: Path) -> None:
    """Refuse a manifest whose recorded hash is not ``path``'s; warn for one from before hashes were recorded."""
    recorded = manifest.get("sha256")
    if recorded is None:
        warnings.warn(
            UncheckedManifestWarning(
                f"{manifest_file} records no SHA-256 of its array (written before csdn-reid recorded one), so "
                f"it cannot be proven to describe {path.name}; its labels are used as they are. Write both "
                "again with `csdn embed` (or save_embeddings) to have them checked"
            ),
            stacklevel=4,
        )
        return
    actual = sha256_file(path)
    if actual != recorded:
        written_for = manifest.get("file") or "another array"
        raise EmbeddingsFileError(
            f"{manifest_file} does not belong to {path}: it was written for {written_for} with SHA-256 "
            f"{str(recorded)[:16]}..., but {path.name} has SHA-256 {actual[:16]}... (a manifest left over from, "
            f"or copied from, another run would label these rows with that run's paths, modality and model); "
            f"write both again with `csdn embed`, or put back the manifest written with {path.name}"
        )


def check_same_model(query_model: str | None, gallery_model: str | None) -> None:
    """Warn (:class:`MixedModelsWarning`) when the two sides' manifests name different models (None: unknown).

    A warning, not an error: the name is the one the user gave (a zoo name, a path, a Hub id, an
    export folder), so the same weights can appear under two names; embeddings of truly different
    models do not share a space, and their ranking means nothing.
    """
    if query_model is not None and gallery_model is not None and query_model != gallery_model:
        warnings.warn(
            MixedModelsWarning(
                f"query and gallery were embedded with different models ({query_model} and {gallery_model}); "
                "embeddings of different models do not share one space, so this ranking is meaningless "
                "unless both names are the same weights: embed both sides with one model"
            ),
            stacklevel=3,
        )


def load_embeddings(path: str | os.PathLike) -> Embeddings:
    """Read an embeddings file and its manifest, checked: float ``[N, D]`` rows, as many as the manifest
    lists, none holding NaN or inf, the manifest's recorded SHA-256 that of the file (read once, streamed).
    A ``.npy`` file is memory-mapped, not read into memory. A manifest that records no hash (written
    before csdn-reid recorded one) is read with an :class:`UncheckedManifestWarning`.

    Raises ``FileNotFoundError`` for a missing file, :class:`csdn.errors.EmbeddingsFileError` for
    one that is not a valid embeddings file (the message names the file and the problem).
    """
    path = check_embeddings_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embeddings file not found: {path}")
    vectors = _read_npy(path) if path.suffix.lower() == ".npy" else _read_safetensors(path)
    fields = _read_manifest(path, vectors)
    _check_rows(vectors, fields["paths"], str(path))
    return Embeddings(vectors, **fields)
