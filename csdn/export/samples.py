"""Fixed synthetic pedestrians for verifying and calibrating exports: no dataset needed, same every run."""

from __future__ import annotations

import numpy as np
from PIL import Image

from csdn.data.synthetic import render_person, sample_identity


def synthetic_people(
    identities: int, modality: str, size: tuple[int, int], seed: int, shots: int = 1
) -> list[Image.Image]:
    """``shots`` renders of each of ``identities`` people in ``modality`` (``size`` = (H, W)), identity-major.

    Identity ``i`` is drawn from seed ``(seed, i)`` whatever the modality, so the visible and
    the infrared lists show the same people; each render has its own pose, place and noise.
    """
    images = []
    for pid in range(identities):
        person = sample_identity(np.random.default_rng([seed, pid]), pid)
        for shot in range(shots):
            rng = np.random.default_rng([seed, pid, shot, 0 if modality == "visible" else 1])
            images.append(render_person(person, modality, rng, size))
    return images
