"""The training set as training sees it: two image lists with contiguous identity labels.

Whatever the source (a dataset reader from :mod:`csdn.data`, its ``.train`` split,
an image folder, or any object with ``.visible`` / ``.infrared`` sample lists),
it becomes a :class:`TrainImages` whose labels run 0..C-1 over the identities,
in increasing order of the original ids. Images are kept as whatever
:func:`csdn.images.transforms.load_image` reads: a file path, or the pixels of a sample
that carries them (``sample.image``, e.g. rows of SYSU-MM01's preprocessed arrays).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csdn.data import DATASET_NAMES, reader_for
from csdn.data.folder import ImageFolder


@dataclass
class TrainImages:
    """Visible and infrared training images with contiguous labels (``pid -> label``)."""

    visible_images: list[Any]  # paths or HxWx3 uint8 arrays
    visible_labels: np.ndarray  # int64 [Nv]
    infrared_images: list[Any]
    infrared_labels: np.ndarray  # int64 [Ni]
    pids: list[int]  # original identity of each label

    @property
    def num_classes(self) -> int:
        return len(self.pids)

    def fingerprint(self) -> dict[str, int]:
        """Sizes recorded in checkpoints, so a resume on different data is caught."""
        return {
            "num_classes": self.num_classes,
            "num_visible": len(self.visible_images),
            "num_infrared": len(self.infrared_images),
        }

    @classmethod
    def from_samples(cls, visible: Sequence[Any], infrared: Sequence[Any]) -> TrainImages:
        """Build from two sample lists (objects with ``.path`` and ``.pid``, optionally ``.image``)."""
        for name, samples in (("visible", visible), ("infrared", infrared)):
            if not len(samples):
                raise ValueError(f"the training set has no {name} images")
            missing = [s for s in samples[:1] if not (hasattr(s, "path") and hasattr(s, "pid"))]
            if missing:
                raise TypeError(f"{name} samples need .path and .pid attributes, got {type(missing[0]).__name__}")
        vis_ids = {int(s.pid) for s in visible}
        ir_ids = {int(s.pid) for s in infrared}
        one_sided = sorted(vis_ids ^ ir_ids)
        if one_sided:
            raise ValueError(
                f"{len(one_sided)} training identities have images in only one modality "
                f"(e.g. {one_sided[:5]}); every identity needs visible and infrared images"
            )
        pids = sorted(vis_ids)
        label_of = {pid: label for label, pid in enumerate(pids)}
        return cls(
            visible_images=[_image_of(s) for s in visible],
            visible_labels=np.array([label_of[int(s.pid)] for s in visible], dtype=np.int64),
            infrared_images=[_image_of(s) for s in infrared],
            infrared_labels=np.array([label_of[int(s.pid)] for s in infrared], dtype=np.int64),
            pids=pids,
        )


def _image_of(sample: Any) -> Any:
    pixels = getattr(sample, "image", None)
    return pixels if pixels is not None else str(sample.path)


def read_image_folder(root: str | os.PathLike) -> TrainImages:
    """Read ``root/visible/<pid>/*`` and ``root/infrared/<pid>/*`` (``<pid>`` an integer folder name).

    The simplest layout for custom data (:class:`csdn.data.folder.ImageFolder`); files are sorted.
    """
    return resolve_train_set(ImageFolder(Path(root)))


def resolve_train_set(data: Any, root: str | os.PathLike | None = None, **options: Any) -> TrainImages:
    """Turn ``data`` into :class:`TrainImages`.

    ``data`` may be TrainImages, a dataset name (``"sysu"``, ``"regdb"``, ``"llcm"``
    or ``"folder"`` for :func:`read_image_folder`, with ``root``), a path to an
    image folder, a dataset reader object (its ``.train`` is used), or any
    object with ``.visible`` and ``.infrared`` sample lists.
    """
    if isinstance(data, TrainImages):
        return data
    if isinstance(data, (str, os.PathLike)):
        name = str(data).lower()
        reader = reader_for(name)
        if reader is not None:
            if root is None:
                raise ValueError(f"dataset {data!r} needs root=<its directory>")
            return resolve_train_set(reader(root, **options))
        if Path(data).is_dir():
            return read_image_folder(data)
        raise ValueError(
            f"unknown dataset {data!r}; choose one of {', '.join(DATASET_NAMES)}, "
            "or pass a directory with visible/ and infrared/ sub-folders"
        )
    split = getattr(data, "train", data)
    if hasattr(split, "visible") and hasattr(split, "infrared"):
        return TrainImages.from_samples(list(split.visible), list(split.infrared))
    raise TypeError(
        f"cannot train on a {type(data).__name__}; pass a dataset name with root, a reader such as "
        "csdn.data.SYSUMM01(root), or an object with .visible and .infrared sample lists"
    )
