"""The PyTorch side of preprocessing: the test transform as a tensor, and the NaN/inf check on batches.

Decoding and the resize/normalise arithmetic live in the torch-free :mod:`csdn.images.decode`
(shared with the exported-model runtime); this module wraps them for torch and
re-exports the decoding names, which is where the rest of the package imports them from.
"""

from __future__ import annotations

import torch
from PIL import Image

from csdn.config import CSDNConfig
from csdn.errors import ImageDecodeError, list_positions
from csdn.images.decode import (
    ACCEPTED_IMAGE_INPUTS,
    SENSOR_BIT_DEPTHS,
    ImageInput,
    Preprocessing,
    check_bit_depth,
    load_image,
)

__all__ = [
    "ACCEPTED_IMAGE_INPUTS",
    "SENSOR_BIT_DEPTHS",
    "ImageDecodeError",
    "ImageInput",
    "TestTransform",
    "check_bit_depth",
    "load_image",
    "nonfinite_rows",
]


def nonfinite_rows(batch: torch.Tensor, first: int = 0) -> tuple[int, str] | None:
    """``(count, "a, b, ...")``: how many images of ``batch`` (``[N, ...]``) hold NaN or inf and
    which (the first ten), or None when all are finite.

    Row numbers start at ``first``: the position of ``batch[0]`` in what the user passed.
    """
    if not batch.is_floating_point() or batch.shape[0] == 0:
        return None
    bad = ~torch.isfinite(batch).flatten(1).all(dim=1)
    if not bool(bad.any()):
        return None
    rows = (bad.nonzero().squeeze(1) + first).tolist()
    return len(rows), list_positions(rows)


class TestTransform:
    """:class:`csdn.images.decode.Preprocessing` for a model's config, returning a torch tensor ``[3, H, W]``."""

    __test__ = False  # not a pytest class, despite the name

    def __init__(self, config: CSDNConfig):
        self.prepare = Preprocessing(config.image_size, config.mean, config.std, config.interpolation)
        self.size, self.resample = self.prepare.size, self.prepare.resample
        # the statistics as tensors [3, 1, 1], for code that normalises tensors itself (training augmentation)
        self.mean, self.std = torch.from_numpy(self.prepare.mean), torch.from_numpy(self.prepare.std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(self.prepare(image))
