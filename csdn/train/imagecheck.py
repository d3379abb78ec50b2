"""Every training image file is opened once before training starts.

Training decodes images lazily, batch by batch: without this check one unreadable file
in a folder of thousands stops a run hours in, and only that one file is named. Here
every file's header is parsed (and its structure checked where the format allows,
``PIL.Image.verify``), all failures are listed together, and ``on_error="skip"`` trains
on the rest.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from csdn.errors import ImageDecodeError, SkippedImagesWarning, describe_skipped
from csdn.images.batches import SkippedImage
from csdn.train.data import TrainImages

ON_ERROR = ("raise", "skip")
_LISTED = 20  # unreadable files named in an error; the count covers the rest


def _problem(image: Any) -> str | None:
    """Why the image file cannot be read, or None (in-memory pixels are always readable)."""
    if not isinstance(image, (str, os.PathLike)):
        return None
    try:
        with Image.open(image) as opened:
            opened.verify()
    except FileNotFoundError:
        return "the file does not exist"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def _keep(images: list[Any], labels: np.ndarray, dropped: set[int], offset: int) -> tuple[list[Any], np.ndarray]:
    """The images (and labels) whose positions, counted from ``offset``, are not in ``dropped``."""
    kept = [i for i in range(len(images)) if i + offset not in dropped]
    return [images[i] for i in kept], labels[kept]


def check_training_images(train_set: TrainImages, on_error: str = "raise", progress: bool = False) -> TrainImages:
    """``train_set`` if every image file opens; else an error listing them, or (``"skip"``) the set without them.

    Skipping is refused when it would leave an identity without images in one modality,
    since every identity must be seen in both.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    images = [*train_set.visible_images, *train_set.infrared_images]
    bad = [
        SkippedImage(index, str(image), problem)
        for index, image in enumerate(tqdm(images, desc="check images", unit="img", disable=not progress))
        if (problem := _problem(image)) is not None
    ]
    if not bad:
        return train_set
    if on_error == "raise":
        more = f"\n  ... and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
        raise ImageDecodeError(
            f"{len(bad)} of the {len(images)} training images cannot be read:\n{describe_skipped(bad[:_LISTED])}{more}\n"
            "fix or remove them, or train on the rest with on_error='skip' (--skip-bad-images)"
        )
    dropped = {item.index for item in bad}  # positions in visible + infrared
    visible = _keep(train_set.visible_images, train_set.visible_labels, dropped, 0)
    infrared = _keep(train_set.infrared_images, train_set.infrared_labels, dropped, len(train_set.visible_images))
    everyone = np.arange(train_set.num_classes)
    emptied = np.setdiff1d(everyone, np.intersect1d(visible[1], infrared[1]))
    if emptied.size:
        lost = [train_set.pids[label] for label in emptied[:10]]
        raise ImageDecodeError(
            f"leaving out the {len(bad)} unreadable images would leave {emptied.size} identities (e.g. {lost}) "
            f"without images in one modality:\n{describe_skipped(bad[:_LISTED])}\nfix those files, or remove "
            "those identities from the training set"
        )
    warnings.warn(SkippedImagesWarning(bad), stacklevel=3)
    return TrainImages(visible[0], visible[1], infrared[0], infrared[1], list(train_set.pids))
