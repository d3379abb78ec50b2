"""One embedding front end for every engine: what ``embed_image`` accepts and everything it does around the model.

The PyTorch path (:mod:`csdn.inference.embed`) and the exported-model runtime
(:mod:`csdn.runtime.embedder`) are thin adapters over :func:`embed_inputs`. This module reads
the inputs (paths, folders, PIL images, numpy arrays, encoded bytes, file objects), expands
folders, batches, decodes one batch at a time with ``on_error``, runs flip test-time
augmentation, refuses NaN/inf by name on the way in and out, and reports what was skipped. An
:class:`Engine` supplies only how preprocessed images become one model input and how the
model runs on it, so a new backend cannot drift from these rules. Torch-free: the runtime
uses it where torch is not installed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from csdn.errors import ImageTensorError, SkippedImagesWarning, UnsupportedInputError, list_positions
from csdn.images.batches import (
    SkippedImage,
    check_batch_size,
    check_flip,
    check_on_error,
    decoded_batches,
    is_image_input,
    is_one_image,
    refuse_all_skipped,
    refuse_nonfinite_rows,
)
from csdn.images.decode import ACCEPTED_IMAGE_INPUTS, Preprocessing, check_bit_depth
from csdn.images.files import expand_folders

TORCH_PRECISIONS = ("fp32", "bf16")  # what the PyTorch engine computes in (the CLI offers them without torch)


@dataclass(frozen=True)
class Inputs:
    """What one call embeds: images to decode (``items``, folders expanded) or a preprocessed ``batch``.

    A preprocessed batch is ``[N,3,H,W]`` in the engine's own array type; list items that
    are not raw images (see :func:`csdn.images.batches.is_image_input`) are preprocessed
    ``[3,H,W]`` images of the engine's type, checked by the engine, and pass through undecoded.
    """

    single: bool  # one image was passed (not a folder, list or batch)
    items: list[Any] | None = None
    batch: Any = None
    numbered: bool = False  # the items came from one array: rows are named by position, not by source

    @property
    def total(self) -> int:
        return len(self.items) if self.items is not None else len(self.batch)

    @property
    def sources(self) -> list[Any]:
        return self.items if self.items is not None and not self.numbered else list(range(self.total))


class Engine(Protocol):
    """What a backend supplies: reading its own preprocessed kinds, forming one model input, running the model."""

    @property
    def preprocessing(self) -> Preprocessing:
        """A decoded image -> float32 ``[3, H, W]``."""
        ...

    @property
    def feature_dim(self) -> int:
        """D of f(x); flip doubles the embedding."""
        ...

    def inputs(self, images: Any) -> Inputs:
        """The call's images; :func:`read_inputs` for everything but the engine's preprocessed kinds."""
        ...

    def batch(self, images: Any, flip: bool) -> Any:
        """One model input from preprocessed images (a list of ``[3,H,W]`` or an ``[n,3,H,W]`` batch),
        with their horizontal mirrors after them when ``flip``."""
        ...

    def run(self, batch: Any) -> np.ndarray:
        """float32 features ``[rows, D]`` of one input from :meth:`batch`."""
        ...

    def finite(self, batch: Any) -> Sequence[bool]:
        """Per image of a preprocessed ``[n,3,H,W]`` batch: whether all its values are finite."""
        ...


@dataclass(frozen=True)
class EmbeddingReport:
    """What :func:`embed_inputs` returns: the rows, which inputs they belong to, and what was skipped.

    ``sources`` are the inputs after folders were expanded (file paths as strings; positions for
    a batch array or tensor); row ``r`` of ``embeddings`` belongs to ``sources[kept[r]]``.
    """

    embeddings: Any  # float32 [N, D], unit-norm rows: a numpy array, or a torch tensor from the PyTorch path
    sources: list[Any]
    kept: list[int]
    skipped: list[SkippedImage]
    single: bool  # the call passed one image (not a folder, list or batch)

    def result(self) -> Any:
        """``[D]`` for one image, ``[N, D]`` for many, after one warning listing what was skipped."""
        if self.skipped:
            warnings.warn(SkippedImagesWarning(self.skipped), stacklevel=3)
        return self.embeddings[0] if self.single else self.embeddings


def accepted_inputs(preprocessed: str = "") -> str:
    """What ``embed_image`` reads, for the error refusing anything else; ``preprocessed`` names the engine's kind."""
    own = f"{preprocessed} [3,H,W] or [N,3,H,W], " if preprocessed else ""
    return f"{ACCEPTED_IMAGE_INPUTS}, a folder of images, {own}a numpy batch NxHxWxC, or a list/tuple of any of these"


def read_inputs(
    images: Any, preprocessed: str = "", is_preprocessed: Callable[[Any], bool] = lambda item: False
) -> Inputs:
    """The images of one call, folders expanded; unreadable types refused before any image is decoded.

    A path is one image unless it is a folder, a numpy array is one image or a batch
    (:func:`csdn.images.batches.is_one_image`), and any other sequence is many. List items
    must be raw images or, where ``is_preprocessed(item)``, the engine's preprocessed images
    (named ``preprocessed`` in the error).
    """
    one = is_one_image(images)
    if one is None and not isinstance(images, Sequence):
        raise UnsupportedInputError(
            f"embed_image cannot read images from {type(images).__name__}; pass {accepted_inputs(preprocessed)}"
        )
    if one:
        return Inputs(single=True, items=[images])
    if isinstance(images, np.ndarray):
        return Inputs(single=False, items=list(images), numbered=True)
    items = expand_folders([images] if isinstance(images, (str, os.PathLike)) else images)
    for index, item in enumerate(items):
        if not (is_image_input(item) or is_preprocessed(item)):
            also = f" or {preprocessed} [3,H,W]" if preprocessed else ""
            raise UnsupportedInputError(
                f"item {index} of the list is a {type(item).__name__}, which cannot be read as an image; "
                f"each item must be {ACCEPTED_IMAGE_INPUTS}{also}"
            )
    return Inputs(single=False, items=items)


def refuse_nonfinite_images(rows: Sequence[int]) -> None:
    """Preprocessed images holding NaN or inf are refused by their position in the call."""
    if rows:
        raise ImageTensorError(
            f"{len(rows)} preprocessed image(s) hold NaN or infinite values (image {list_positions(list(rows))} "
            "of this call, counting from 0); their embeddings would be meaningless. Check the code that produced "
            "them, or pass raw images to embed_image() to have them preprocessed"
        )


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (float32); NaN/inf rows stay non-finite for the caller to refuse by name."""
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return (features / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def embed_batch(engine: Engine, images: Any, flip: bool) -> np.ndarray:
    """Unit-norm embeddings of preprocessed images: ``concat(f(x), f(flip(x)))`` with flip, else ``f(x)``.

    The mirrored copies run in the same model call as the originals.
    """
    count = len(images)
    features = engine.run(engine.batch(images, flip))
    if flip:
        features = np.concatenate([features[:count], features[count:]], axis=1)
    return unit_rows(features)


def _preprocessed_chunks(engine: Engine, batch: Any, batch_size: int) -> Iterator[tuple[Any, int]]:
    for start in range(0, len(batch), batch_size):
        chunk = batch[start : start + batch_size]
        refuse_nonfinite_images([start + row for row, ok in enumerate(engine.finite(chunk)) if not ok])
        yield chunk, len(chunk)


def embed_inputs(
    engine: Engine,
    images: Any,
    modality: str,
    *,
    batch_size: int = 32,
    flip: bool = True,
    progress: bool = False,
    bit_depth: int | None = None,
    on_error: str = "raise",
) -> EmbeddingReport:
    """Embed one modality's images on ``engine``; ``images`` as ``embed_image`` takes them, or :class:`Inputs`.

    Settings are checked before any input, inputs before any image is decoded; images are
    decoded one batch at a time. With ``on_error="skip"`` unreadable images are left out and
    recorded (an error when none can be read); embeddings that come out NaN or infinite are an
    error naming their images.
    """
    batch_size, flip = check_batch_size(batch_size), check_flip(flip)
    skipped: list[SkippedImage] | None = [] if check_on_error(on_error) == "skip" else None
    bit_depth = check_bit_depth(bit_depth)
    inputs = images if isinstance(images, Inputs) else engine.inputs(images)
    batches: Iterator[tuple[Any, int]]
    if inputs.items is None:
        batches = _preprocessed_chunks(engine, inputs.batch, batch_size)
    else:
        preprocess = engine.preprocessing
        batches = decoded_batches(inputs.items, preprocess, batch_size, bit_depth, skipped, ready=_undecoded)
    outputs = []
    with tqdm(total=inputs.total, disable=not progress, desc=f"embed {modality}", unit="img") as bar:
        for chunk, consumed in batches:
            if len(chunk):
                outputs.append(embed_batch(engine, chunk, flip))
            bar.update(consumed)
    skipped = skipped or []
    refuse_all_skipped(skipped, inputs.total)
    dim = engine.feature_dim * (2 if flip else 1)
    embeddings = np.concatenate(outputs) if outputs else np.empty((0, dim), np.float32)
    dropped = {s.index for s in skipped}
    kept = [index for index in range(inputs.total) if index not in dropped]
    sources = inputs.sources
    refuse_nonfinite_rows(np.isfinite(embeddings).all(axis=1).reshape(-1), sources, kept)
    return EmbeddingReport(embeddings=embeddings, sources=sources, kept=kept, skipped=skipped, single=inputs.single)


def _undecoded(item: Any) -> bool:
    """An engine's preprocessed image in a list (:func:`read_inputs` let it through): passed on as it is."""
    return not is_image_input(item)
