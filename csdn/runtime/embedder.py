"""``ExportedEmbedder``: ``embed_image`` on an exported graph, without torch.

The same contract as :meth:`csdn.model.CSDN.embed_image`, from the same front end
(:mod:`csdn.images.embedding`): one image or many (paths, folders, PIL images, numpy arrays,
16-bit thermal frames, encoded bytes), the same decoding and preprocessing, flip test-time
augmentation run in the same graph call as the originals, and ``concat(f(x), f(flip(x)))``
scaled to unit norm. Each graph is the front end's engine. Embeddings are float32 numpy arrays,
which :func:`csdn.match` accepts as they are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from csdn.errors import ArtifactError, ImageTensorError
from csdn.images.decode import Preprocessing
from csdn.images.embedding import Inputs, embed_batch, embed_inputs, read_inputs, refuse_nonfinite_images
from csdn.modality import MODALITIES, normalize_modality
from csdn.runtime.backends import BACKENDS
from csdn.runtime.metadata import ARTIFACT_SUFFIXES, REEXPORT, ArtifactMetadata, metadata_path, read_metadata

_MAIN_SUFFIX = {suffixes[0]: fmt for fmt, suffixes in ARTIFACT_SUFFIXES.items()}


@dataclass
class ExportedGraph:
    """One verified graph: its metadata and a running backend, ``[N,3,H,W] -> f(x) [N, D]``.

    The front end's :class:`csdn.images.embedding.Engine` for the graph's modality.
    """

    path: Path
    meta: ArtifactMetadata
    threads: int | None = None
    preprocessing: Preprocessing = field(init=False)

    def __post_init__(self) -> None:
        self.run = BACKENDS[self.meta.format](self.path, self.threads)
        meta = self.meta
        self.preprocessing = Preprocessing(meta.image_size, meta.mean, meta.std, meta.interpolation)

    @property
    def feature_dim(self) -> int:
        return self.meta.feature_dim

    def check_shape(self, batch: Any) -> None:
        """Refuse preprocessed input that is not a float array ``[N,3,H,W]`` of this graph's size."""
        height, width = self.meta.image_size
        if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1:] != (3, height, width):
            shape = list(batch.shape) if isinstance(batch, np.ndarray) else type(batch).__name__
            raise ImageTensorError(
                f"preprocessed images for {self.path.name} must be a float32 array [N,3,{height},{width}], got "
                f"{shape}; pass raw images (paths, PIL images, HxWxC arrays) to have them resized and normalised"
            )

    def check_batch(self, batch: np.ndarray) -> None:
        """Refuse preprocessed input of the wrong shape or type, or holding NaN/inf."""
        self.check_shape(batch)
        refuse_nonfinite_images([row for row, ok in enumerate(self.finite(batch)) if not ok])

    def inputs(self, images: Any) -> Inputs:
        """What ``embed_image`` reads; an array that looks preprocessed belongs to ``embed_preprocessed``."""
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
        return read_inputs(images)

    def batch(self, images: Any, flip: bool) -> np.ndarray:
        batch = np.ascontiguousarray(images if isinstance(images, np.ndarray) else np.stack(images), dtype=np.float32)
        return np.concatenate([batch, batch[..., ::-1]]) if flip else batch

    def finite(self, batch: np.ndarray) -> Sequence[bool]:
        return np.isfinite(batch).reshape(len(batch), -1).all(axis=1).tolist()

    def embed(self, batch: np.ndarray, flip: bool) -> np.ndarray:
        """Unit-norm embeddings of a preprocessed batch: f(x) with f(flip(x)) appended when ``flip``."""
        self.check_batch(batch)
        return embed_batch(self, batch, flip)


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
        report = embed_inputs(
            graph,
            images,
            graph.meta.modality,
            batch_size=batch_size,
            flip=flip,
            progress=progress,
            bit_depth=bit_depth,
            on_error=on_error,
        )
        return report.result()

    def embed_preprocessed(
        self, batch: np.ndarray, modality: str, *, flip: bool = True, batch_size: int = 32
    ) -> np.ndarray:
        """Embeddings ``[N, D]`` of images already preprocessed to float32 ``[N,3,H,W]``."""
        graph = self.graph(modality)
        graph.check_shape(batch)
        inputs = Inputs(single=False, batch=batch)
        return embed_inputs(graph, inputs, graph.meta.modality, batch_size=batch_size, flip=flip).embeddings
