"""``csdn.match`` as users call it: each side may be vectors, an embeddings file, or images to embed.

:func:`csdn.retrieval.exact.match_arrays` ranks arrays; this front door first turns every other kind
of input into vectors (loading an embeddings file with its manifest, or embedding a folder or a
list of images with ``model``) and keeps the names of the rows, so a result can say which file
matched which. Where torch is not installed, numpy arrays (say from :mod:`csdn.runtime`) are
ranked by :func:`csdn.retrieval.exact_numpy.match_arrays_numpy` instead: torch is imported only
on the torch path.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from csdn.errors import SkippedImagesWarning
from csdn.retrieval.checks import is_tensor, torch_installed
from csdn.retrieval.matches import Matches

__all__ = ["NamedMatches", "match"]


@dataclass(frozen=True)
class NamedMatches(Matches):
    """:class:`Matches` that also know what each query and gallery row is (file paths, or row numbers).

    ``query_names[q]`` names query row ``q``; ``gallery_names[indices[q, j]]`` its j-th match.
    """

    query_names: tuple[str, ...] = ()
    gallery_names: tuple[str, ...] = ()

    def named(self) -> list[list[tuple[str, float]]]:
        """``[[(gallery_name, score), ...], ...]``, one list per query, best first."""
        return [[(self.gallery_names[i], s) for i, s in row] for row in self.to_list()]


NEEDS_TORCH = (
    "needs PyTorch, which is not installed here: pip install torch (https://pytorch.org/get-started/locally/); "
    "without it, embed with csdn.runtime.ExportedEmbedder and pass its numpy arrays"
)


def _is_vectors(side: Any) -> bool:
    return is_tensor(side) or isinstance(side, np.ndarray)


def _resolve_model(model: Any, what: str) -> Any:
    if model is None:
        raise ValueError(
            f"the {what} is images, not embeddings; pass model= (a loaded model or a name such as "
            "'synthetic-tiny') to embed them, or pass embeddings (an array, or a .safetensors/.npy file "
            "from csdn embed)"
        )
    if isinstance(model, (str, os.PathLike)):
        from csdn.hub.loading import load

        return load(model)
    return model


def _side(
    side: Any, what: str, modality: str, model: Any, embed_options: dict[str, Any]
) -> tuple[Any, Any, list[str] | None]:
    """``(vectors, model used, row names or None)`` for one side of a match; a file or :class:`Embeddings`
    stays one, so that the models its manifest names can be compared."""
    if _is_vectors(side):
        return side, model, None
    if not torch_installed():
        raise ModuleNotFoundError(
            f"the {what} is not an array: reading an embeddings file or embedding images {NEEDS_TORCH} "
            "(an embeddings .npy file loads with numpy.load)",
            name="torch",
        )
    from csdn.retrieval.embeddings import Embeddings, is_embeddings_file, load_embeddings
    from csdn.retrieval.prepared import PreparedGallery

    if isinstance(side, PreparedGallery):
        return side, model, None
    if isinstance(side, (str, os.PathLike)) and is_embeddings_file(side):
        side = load_embeddings(side)
    if isinstance(side, Embeddings):
        return side, model, list(side.paths)
    from csdn.inference.embed import embed_with_report

    model = _resolve_model(model, what)
    items = side if isinstance(side, (list, tuple)) else [side]
    report = embed_with_report(model, items, modality, **embed_options)
    if report.skipped:
        warnings.warn(SkippedImagesWarning(report.skipped), stacklevel=4)
    names = [
        str(report.sources[i]) if isinstance(report.sources[i], (str, os.PathLike)) else str(i) for i in report.kept
    ]
    return report.embeddings, model, names


def match(
    query: Any,
    gallery: Any,
    topk: int = 10,
    *,
    model: Any = None,
    query_modality: str = "infrared",
    gallery_modality: str = "visible",
    embed_options: dict[str, Any] | None = None,
    **options: Any,
) -> Matches:
    """Rank ``gallery`` for every row of ``query`` by cosine similarity (exact top-``topk``).

    Each side is any of:

    * vectors: a ``[N, D]`` (or ``[D]``) torch tensor or numpy array, a ``numpy.memmap`` (the only kind
      where torch is not installed: then the search is numpy's and the result holds numpy arrays);
    * a :class:`~csdn.retrieval.prepared.PreparedGallery` (gallery side: vectors made ready once for many
      searches);
    * an embeddings file from ``csdn embed`` (``.safetensors`` / ``.npy``, labelled by its
      manifest) or an :class:`~csdn.retrieval.embeddings.Embeddings`;
    * images: a folder (searched recursively, hidden files skipped), an image path, or a
      list of what ``embed_image`` takes. They are embedded with ``model`` (a loaded model,
      or a name/path for :func:`csdn.load`) in ``query_modality`` / ``gallery_modality``
      (default: infrared queries against a visible gallery), passing ``embed_options``
      (e.g. ``{"on_error": "skip", "bit_depth": 14, "batch_size": 64}``) to the embedder.

    ``options`` go to :func:`csdn.retrieval.exact.match_arrays` (``backend``, ``chunk_size``, ``progress``, ...).
    Vectors on both sides give its :class:`Matches`; when either side came from files or
    images, a :class:`NamedMatches` whose ``query_names`` / ``gallery_names`` say which row is
    which (file paths; row numbers for in-memory items).
    """
    embed_options = dict(embed_options or {})
    query_vectors, model, query_names = _side(query, "query", query_modality, model, embed_options)
    gallery_vectors, model, gallery_names = _side(gallery, "gallery", gallery_modality, model, embed_options)
    query_vectors, gallery_vectors = _vectors(query_vectors, gallery_vectors)
    result = _search(query_vectors, gallery_vectors, topk, **options)
    if query_names is None and gallery_names is None:
        return result
    return NamedMatches(
        result.indices,
        result.scores,
        query_names=tuple(query_names or map(str, range(_rows(query_vectors)))),
        gallery_names=tuple(gallery_names or map(str, range(_rows(gallery_vectors)))),
    )


def _vectors(query: Any, gallery: Any) -> tuple[Any, Any]:
    """Both sides as vectors; when both came from files or :class:`Embeddings`, their models are compared first."""
    if not torch_installed():  # then both sides are arrays (_side refuses the rest)
        return query, gallery
    from csdn.retrieval.embeddings import Embeddings, check_same_model

    if isinstance(query, Embeddings) and isinstance(gallery, Embeddings):
        check_same_model(query.model, gallery.model)
    return tuple(side.vectors if isinstance(side, Embeddings) else side for side in (query, gallery))  # type: ignore[return-value]


def _search(query: Any, gallery: Any, topk: int, **options: Any) -> Matches:
    """The torch search where torch is installed (whatever the inputs), else the numpy one."""
    if torch_installed():
        from csdn.retrieval.exact import match_arrays

        return match_arrays(query, gallery, topk, **options)
    from csdn.retrieval.exact_numpy import match_arrays_numpy

    return match_arrays_numpy(query, gallery, topk, **options)


def _rows(vectors: Any) -> int:
    return 1 if vectors.ndim == 1 else int(vectors.shape[0])
