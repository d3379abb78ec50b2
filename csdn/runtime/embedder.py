"""``ExportedEmbedder``: ``embed_image`` on an exported graph, without torch.

The same contract as :meth:`csdn.model.CSDN.embed_image`: one image or many (paths, folders,
PIL images, numpy arrays, 16-bit thermal frames, encoded bytes), the same decoding and
preprocessing code (:mod:`csdn.images.decode`), flip test-time augmentation run in the same graph
call as the originals, and ``concat(f(x), f(flip(x)))`` scaled to unit norm. Embeddings are
float32 numpy arrays, which :func:`csdn.match` accepts as they are.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from csdn.errors import ArtifactError, ImageTensorError, SkippedImagesWarning, UnsupportedInputError, list_positions
from csdn.images.batches import (
    SkippedImage,
    check_batch_size,
    check_flip,
    check_on_error,
    decoded_batches,
    is_file_like,
    is_one_image,
    refuse_all_skipped,
    refuse_nonfinite_rows,
)
from csdn.images.decode import ACCEPTED_IMAGE_INPUTS, Preprocessing, check_bit_depth
from csdn.images.files import expand_folders
from csdn.modality import MODALITIES, normalize_modality
from csdn.runtime.backends import BACKENDS
from csdn.runtime.metadata import ARTIFACT_SUFFIXES, REEXPORT, ArtifactMetadata, metadata_path, read_metadata

_MAIN_SUFFIX = {suffixes[0]: fmt for fmt, suffixes in ARTIFACT_SUFFIXES.items()}


@dataclass
class ExportedGraph:
    """One verified graph: its metadata and a running backend, ``[N,3,H,W] -> f(x) [N, D]``."""

    path: Path
    meta: ArtifactMetadata
    threads: int | None = None

    def __post_init__(self) -> None:
        self.run = BACKENDS[self.meta.format](self.path, self.threads)

    def check_batch(self, batch: np.ndarray) -> None:
        """Refuse preprocessed input of the wrong shape or type, or holding NaN/inf."""
        height, width = self.meta.image_size
        if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1:] != (3, height, width):
            shape = list(batch.shape) if isinstance(batch, np.ndarray) else type(batch).__name__
            raise ImageTensorError(
                f"preprocessed images for {self.path.name} must be a float32 array [N,3,{height},{width}], got "
                f"{shape}; pass raw images (paths, PIL images, HxWxC arrays) to have them resized and normalised"
            )
        finite = np.isfinite(batch).all(axis=(1, 2, 3))
        if not finite.all():
            rows = np.flatnonzero(~finite)
            raise ImageTensorError(
                f"{len(rows)} preprocessed image(s) hold NaN or infinite values (rows {list_positions(rows.tolist())}); "
                "their embeddings would be meaningless: check the code that produced them, or pass raw images"
            )

    def embed(self, batch: np.ndarray, flip: bool) -> np.ndarray:
        """Unit-norm embeddings of a preprocessed batch: f(x) with f(flip(x)) appended when ``flip``."""
        self.check_batch(batch)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        count = len(batch)
        if flip:
            batch = np.concatenate([batch, batch[..., ::-1]])
        features = self.run(batch)
        if flip:
            features = np.concatenate([features[:count], features[count:]], axis=1)
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite rows are refused by the caller, by name
            norms = np.linalg.norm(features, axis=1, keepdims=True)
            return (features / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def find_artifacts(path: str | os.PathLike) -> list[Path]:
    """The artifact files ``path`` names: itself (an ``.onnx``/``.xml`` file or its metadata) or those in a folder."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p for suffix in _MAIN_SUFFIX for p in path.glob(f"*{suffix}") if metadata_path(p).is_file())
        if not found:
            raise ArtifactError(
                f"no exported model in {path} (looked for .onnx/.xml files with their .json "
                f"metadata); create one with `csdn export MODEL {path}`"
            )
        return found
    if path.name.endswith(".json"):
        path = path.with_name(path.name[: -len(".json")])
    if path.suffix == ".bin":
        path = path.with_suffix(".xml")
    if path.suffix not in _MAIN_SUFFIX:
        raise ArtifactError(
            f"{path} is not an exported model: pass a folder written by `csdn export`, or one of its .onnx / .xml files"
        )
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    return [path]


class ExportedEmbedder:
    """Embed images with a model exported by :func:`csdn.export.export_model`, on ONNX Runtime or OpenVINO.

    ``path`` is an export folder (one graph per modality) or one ``.onnx`` / ``.xml`` file.
    Every graph's files are checked against the SHA-256s in its metadata before use.
    ``threads`` sets the engine's thread count (default: the engine's choice).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None):
        self.graphs: dict[str, ExportedGraph] = {}
        for artifact in find_artifacts(path):
            meta = read_metadata(artifact)
            if meta.modality in self.graphs:
                other = self.graphs[meta.modality].path.name
                raise ArtifactError(
                    f"{path} holds two {meta.modality} graphs ({other} and {artifact.name}); "
                    "pass the one file you mean, or keep one export per folder"
                )
            self.graphs[meta.modality] = ExportedGraph(artifact, meta, threads)
        first = next(iter(self.graphs.values())).meta
        for graph in self.graphs.values():
            if (
                graph.meta.image_size,
                graph.meta.mean,
                graph.meta.std,
                graph.meta.interpolation,
                graph.meta.feature_dim,
            ) != (first.image_size, first.mean, first.std, first.interpolation, first.feature_dim):
                raise ArtifactError(
                    f"the graphs in {path} come from different models (their preprocessing or "
                    f"feature size differ); {REEXPORT}"
                )
        self.preprocess = Preprocessing(first.image_size, first.mean, first.std, first.interpolation)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.graphs)

    def graph(self, modality: str) -> ExportedGraph:
        """The graph of ``modality`` (aliases accepted); an error naming the fix when it was not exported."""
        modality = normalize_modality(modality)
        if modality not in self.graphs:
            raise ArtifactError(
                f"this export holds no {modality} graph (only {', '.join(self.modalities)}); "
                f"export with --modality {modality} or --modality both"
            )
        return self.graphs[modality]

    def embed_image(
        self,
        images: Any,
        modality: str,
        *,
        flip: bool = True,
        batch_size: int = 32,
        progress: bool = False,
        bit_depth: int | None = None,
        on_error: str = "raise",
    ) -> np.ndarray:
        """float32 embeddings with unit-norm rows: ``[D]`` for one image, ``[N, D]`` for many.

        ``images`` takes what :meth:`csdn.model.CSDN.embed_image` takes, with preprocessed
        batches as float32 numpy arrays ``[N,3,H,W]`` (via :meth:`embed_preprocessed`) instead
        of torch tensors; folders are expanded to their images (recursive, sorted, hidden files
        skipped). ``on_error="skip"`` leaves unreadable images out and lists them in one
        :class:`csdn.errors.SkippedImagesWarning`, as the PyTorch path does.
        """
        graph = self.graph(modality)
        batch_size, flip = check_batch_size(batch_size), check_flip(flip)
        bit_depth = check_bit_depth(bit_depth)
        skipped: list[SkippedImage] | None = [] if check_on_error(on_error) == "skip" else None
        single, items = _as_items(images)
        outputs = []
        with tqdm(total=len(items), disable=not progress, desc=f"embed {graph.meta.modality}", unit="img") as bar:
            for arrays, consumed in decoded_batches(items, self.preprocess, batch_size, bit_depth, skipped):
                if arrays:
                    outputs.append(graph.embed(np.stack(arrays), flip))
                bar.update(consumed)
        if skipped:
            refuse_all_skipped(skipped, len(items))
        result = np.concatenate(outputs) if outputs else np.empty((0, graph.meta.embedding_dim(flip)), np.float32)
        dropped = {s.index for s in skipped or ()}
        kept = [index for index in range(len(items)) if index not in dropped]
        refuse_nonfinite_rows(np.isfinite(result).all(axis=1).reshape(-1), items, kept)
        if skipped:
            warnings.warn(SkippedImagesWarning(skipped), stacklevel=2)
        return result[0] if single else result

    def embed_preprocessed(
        self, batch: np.ndarray, modality: str, *, flip: bool = True, batch_size: int = 32
    ) -> np.ndarray:
        """Embeddings ``[N, D]`` of images already preprocessed to float32 ``[N,3,H,W]``."""
        graph = self.graph(modality)
        batch_size, flip = check_batch_size(batch_size), check_flip(flip)
        graph.check_batch(batch)
        parts = [graph.embed(batch[i : i + batch_size], flip) for i in range(0, len(batch), batch_size)]
        result = np.concatenate(parts) if parts else np.empty((0, graph.meta.embedding_dim(flip)), np.float32)
        refuse_nonfinite_rows(np.isfinite(result).all(axis=1).reshape(-1), range(len(result)), range(len(result)))
        return result


def _as_items(images: Any) -> tuple[bool, list[Any]]:
    """``(one image?, the images as a list)``, with folders expanded; unreadable types refused up front."""
    if (
        isinstance(images, np.ndarray)
        and images.ndim == 4
        and images.shape[1] == 3
        and images.shape[-1] not in (1, 3, 4)
    ):
        raise ImageTensorError(
            f"an array of shape {list(images.shape)} looks like preprocessed images [N,3,H,W]: pass it to "
            "embed_preprocessed(); embed_image() reads numpy batches of raw images as NxHxWxC"
        )
    one = is_one_image(images)
    if one is None:
        raise UnsupportedInputError(
            f"cannot read images from {type(images).__name__}; pass {ACCEPTED_IMAGE_INPUTS}, "
            "a folder, a numpy batch NxHxWxC, or a list of these"
        )
    if one:
        return True, [images]
    if isinstance(images, np.ndarray):
        return False, list(images)
    if isinstance(images, (str, os.PathLike)):  # a folder
        return False, expand_folders([images])
    for index, item in enumerate(images):
        if not (isinstance(item, (str, os.PathLike, Image.Image, np.ndarray)) or is_file_like(item)):
            raise UnsupportedInputError(
                f"item {index} of the list is a {type(item).__name__}, which cannot be "
                f"read as an image; each item must be {ACCEPTED_IMAGE_INPUTS}"
            )
    return False, expand_folders(images)
