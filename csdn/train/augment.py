"""Stage-3 training augmentations (PIL + numpy + torch, no torchvision).

Every image is first resized to the model's input size (as the reference
pre-resizes its training arrays), then: zero-pad 10 px, random crop back to
size, horizontal flip (p 0.5), ImageNet normalisation and channel random erasing
(p 0.5). The second visible view then gets a channel exchange, infrared images
a channel-adaptive gray. All randomness comes from the ``numpy.random.Generator``
passed in, one per image, so results do not depend on worker processes or order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from csdn.config import CSDNConfig
from csdn.images.transforms import TestTransform, load_image
from csdn.train.config import TrainConfig

# Fill value of erased areas. It is written into the *normalised* tensor, as in
# the reference implementation (a CIFAR mean, i.e. a slightly bright grey patch).
ERASE_VALUE = (0.4914, 0.4822, 0.4465)
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
VIEWS = ("visible", "exchange", "infrared")


def channel_random_erasing(
    image: torch.Tensor,
    rng: np.random.Generator,
    probability: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    min_aspect: float = 0.3,
) -> torch.Tensor:
    """With ``probability``, fill one random rectangle of ``image`` [3,H,W] with :data:`ERASE_VALUE`.

    The rectangle covers a uniform fraction in ``area`` of the image with an
    aspect ratio (h/w) uniform in [min_aspect, 1/min_aspect]; up to 100 draws are
    tried until one fits, otherwise the image is returned unchanged.
    """
    if rng.random() > probability:
        return image
    _, height, width = image.shape
    for _ in range(100):
        target = rng.uniform(*area) * height * width
        aspect = rng.uniform(min_aspect, 1.0 / min_aspect)
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        if w < width and h < height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            for channel, value in enumerate(ERASE_VALUE):
                image[channel, top : top + h, left : left + w] = value
            return image
    return image


def _replicate(image: torch.Tensor, channel: int) -> torch.Tensor:
    image[:] = image[channel].clone()
    return image


def _grayscale(image: torch.Tensor) -> torch.Tensor:
    image[:] = sum(weight * image[c] for c, weight in enumerate(GRAY_WEIGHTS))
    return image


def channel_exchange(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Copy one of R, G, B (uniformly chosen) into all three channels.

    (The reference "ChannelExchange(gray=2)" draws from 0..2, so its grayscale
    branch never fires; that behaviour is kept.)
    """
    return _replicate(image, int(rng.integers(0, 3)))


def channel_adaptive_gray(image: torch.Tensor, rng: np.random.Generator, probability: float = 0.5) -> torch.Tensor:
    """With chance 3/4 copy one random channel into all three; otherwise turn to grayscale with ``probability``."""
    choice = int(rng.integers(0, 4))
    if choice < 3:
        return _replicate(image, choice)
    if rng.random() > probability:
        return image
    return _grayscale(image)


class TrainAugment:
    """Decode, resize, and produce one augmented training view of an image file."""

    def __init__(self, model_config: CSDNConfig, config: TrainConfig):
        self.test = TestTransform(model_config)  # resize filter + normalisation statistics
        self.pad, self.flip_prob = config.pad, config.flip_prob
        self.erasing_prob, self.gray_prob = config.erasing_prob, config.gray_prob
        # every uint8 value of each channel normalised once, by the very float32 operations a whole image
        # would go through ((v / 255 - mean) / std), so a table lookup gives the same values bit for bit
        levels = torch.arange(256, dtype=torch.float32).expand(3, 1, 256).div(255.0)
        self._table = ((levels - self.test.mean) / self.test.std).reshape(3, 256).numpy()
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (pixels, their padded normalised form)

    def resized(self, source: Any) -> np.ndarray:
        """The image (a path or pixels) as uint8 [H,W,3] at the model's input size."""
        height, width = self.test.size
        image = load_image(source)
        if image.size != (width, height):
            image = image.resize((width, height), self.test.resample)
        return np.asarray(image, dtype=np.uint8)

    def __call__(self, pixels: np.ndarray, view: str, rng: np.random.Generator) -> torch.Tensor:
        """One augmented, normalised view [3,H,W] of ``pixels`` (``view`` in :data:`VIEWS`)."""
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
        height, width, _ = pixels.shape
        pad = self.pad
        padded = self._normalised_padded(pixels)
        top = int(rng.integers(0, 2 * pad + 1))
        left = int(rng.integers(0, 2 * pad + 1))
        crop = padded[:, top : top + height, left : left + width]
        if rng.random() < self.flip_prob:
            crop = crop[:, :, ::-1]
        tensor = torch.from_numpy(np.ascontiguousarray(crop))
        tensor = channel_random_erasing(tensor, rng, self.erasing_prob)
        if view == "exchange":
            tensor = channel_exchange(tensor, rng)
        elif view == "infrared":
            tensor = channel_adaptive_gray(tensor, rng, self.gray_prob)
        return tensor

    def _normalised_padded(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels`` zero-padded by ``pad`` and normalised, float32 ``[3, H+2p, W+2p]``.

        Normalising before cropping gives the same values as after (each value depends only on
        its byte and channel); the two views drawn from one visible image share this work.
        """
        if self._last is not None and self._last[0] is pixels:
            return self._last[1]
        height, width, _ = pixels.shape
        pad = self.pad
        out = np.empty((3, height + 2 * pad, width + 2 * pad), dtype=np.float32)
        for channel in range(3):
            table = self._table[channel]
            out[channel] = table[0]  # the zero padding, normalised
            out[channel, pad : pad + height, pad : pad + width] = table[pixels[:, :, channel]]
        self._last = (pixels, out)
        return out

    def plain_view(self, source: Any) -> torch.Tensor:
        """The un-augmented test transform of an image (stage 1/2 feature extraction)."""
        return self.test(load_image(source))
