"""The items dataset readers hand out: one image with its identity, camera and modality."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from csdn.images.decode import load_image

UNKNOWN_CAMERA = -1


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    ``path`` names the image: a file path for images on disk, or ``"<file.npy>#<row>"``
    for a row of a preprocessed array, in which case ``image`` holds the pixels
    (a read-only, memory-mapped ``HxWx3`` uint8 view, so a reader never copies a
    whole array into memory). ``camid`` is :data:`UNKNOWN_CAMERA` where the
    source does not record cameras.
    """

    path: str
    pid: int
    camid: int
    modality: str  # "visible" | "infrared"
    image: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def source(self) -> Any:
        """What ``embed_image`` and :func:`csdn.images.transforms.load_image` accept: the pixels, else the path."""
        return self.image if self.image is not None else self.path

    def load(self) -> Image.Image:
        """Decode the image as 8-bit RGB."""
        return load_image(self.source)


@dataclass(frozen=True)
class TrainSet:
    """Training images of both modalities, identities relabelled to ``0..num_classes-1``."""

    visible: list[Sample]
    infrared: list[Sample]

    @property
    def num_classes(self) -> int:
        pids = {s.pid for s in self.visible} | {s.pid for s in self.infrared}
        return len(pids)

    def __repr__(self) -> str:
        return (
            f"TrainSet({self.num_classes} identities, {len(self.visible)} visible, "
            f"{len(self.infrared)} infrared images)"
        )


def relabel(visible: Sequence[Sample], infrared: Sequence[Sample]) -> TrainSet:
    """Map the identities of both modalities, in sorted order, to ``0..N-1``.

    One mapping for both modalities, so a label means the same person in both,
    which the cross-modality losses rely on.
    """
    pids = sorted({s.pid for s in visible} | {s.pid for s in infrared})
    label = {pid: index for index, pid in enumerate(pids)}

    def mapped(samples: Sequence[Sample]) -> list[Sample]:
        return [Sample(s.path, label[s.pid], s.camid, s.modality, s.image) for s in samples]

    return TrainSet(mapped(visible), mapped(infrared))


def sample_arrays(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """The identities and cameras of ``samples`` as int64 arrays (what the metrics take)."""
    pids = np.fromiter((s.pid for s in samples), dtype=np.int64, count=len(samples))
    camids = np.fromiter((s.camid for s in samples), dtype=np.int64, count=len(samples))
    return pids, camids
