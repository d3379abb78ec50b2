"""Tiny colour-coded visible/infrared identities on disk, and their cross-modality mAP, for training tests.

Each identity is four horizontal bands with its own brightness levels. Visible
images paint every band in a hue drawn per image (so colour carries no identity),
infrared images show the band brightness as gray through a different response
curve; both get a random shift and pixel noise. Only the brightness layout is
shared across modalities, which a network has to learn to match.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (64, 32)  # (height, width), the tiny model's input


def _identity_levels(pid: int) -> np.ndarray:
    return np.random.default_rng([7, pid]).uniform(0.15, 0.95, size=4)


def _render(levels: np.ndarray, modality: str, rng: np.random.Generator) -> np.ndarray:
    height, width = SIZE
    rows = np.repeat(levels, height // len(levels))
    shift = int(rng.integers(-4, 5))
    rows = np.roll(rows, shift)
    if modality == "visible":
        hue = rng.uniform()
        rgb = np.array([colorsys.hsv_to_rgb(hue, 0.7, v) for v in rows])  # [H, 3]
        image = np.repeat(rgb[:, None, :], width, axis=1)
    else:
        gray = rows**0.7
        image = np.repeat(np.repeat(gray[:, None, None], width, axis=1), 3, axis=2)
    image = image + rng.normal(0.0, 0.04, size=image.shape)
    return (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def write_identities(root: Path, pids: range | list[int], per_modality: int = 6, seed: int = 0) -> Path:
    """Write ``root/{visible,infrared}/<pid>/<k>.png`` and return ``root``."""
    for pid in pids:
        levels = _identity_levels(pid)
        for modality in ("visible", "infrared"):
            folder = root / modality / f"{pid:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([seed, pid, modality == "visible"])
            for k in range(per_modality):
                Image.fromarray(_render(levels, modality, rng)).save(folder / f"{k}.png")
    return root


def cross_modality_map(model, root: Path) -> float:
    """mAP of infrared queries against the visible gallery of the identities under ``root``."""
    from csdn.evaluation import eval_regdb
    from csdn.train.data import read_image_folder

    data = read_image_folder(root)
    query = model.embed_image(data.infrared_images, "infrared")
    gallery = model.embed_image(data.visible_images, "visible")
    _, mean_ap, _ = eval_regdb((-(query @ gallery.t())).numpy(), data.infrared_labels, data.visible_labels)
    return float(mean_ap)
