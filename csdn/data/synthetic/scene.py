"""Cameras and the places they look at.

A camera is a sensor (visible, near-infrared or thermal) looking at one fixed
place. The place is built once per camera (cached) as a material map wider than
a crop, so every crop from that camera shares its background layout, as with a
real fixed surveillance camera; each image takes its own window into it.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

SENSORS = ("visible", "nir", "thermal")


@dataclass(frozen=True)
class CameraStyle:
    """Fixed properties of one camera; per-image jitter is added around them."""

    sensor: str  # "visible" | "nir" (active near-infrared) | "thermal" (far-infrared)
    scene: str = "indoor"  # "indoor" | "outdoor"
    scene_seed: int = 0  # picks the layout and palette of the place
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # white-balance error (visible only)
    light: float = 1.0  # exposure; < 0.5 is a low-light camera (LLCM's visible cameras)
    noise: float = 0.02  # sensor noise std on the [0, 1] scale
    blur: float = 0.4  # mean optical blur radius in output pixels

    def __post_init__(self) -> None:
        if self.sensor not in SENSORS:
            raise ValueError(f"unknown sensor {self.sensor!r}; choose one of {', '.join(SENSORS)}")
        if self.scene not in ("indoor", "outdoor"):
            raise ValueError(f"unknown scene {self.scene!r}; choose 'indoor' or 'outdoor'")

    @property
    def modality(self) -> str:
        return "visible" if self.sensor == "visible" else "infrared"


@dataclass(frozen=True)
class Place:
    """A scene pre-rendered for each sensor (read-only, shared through the cache)."""

    rgb: np.ndarray  # float32 [PH, PW, 3] visible albedo
    nir: np.ndarray  # float32 [PH, PW] near-infrared reflectance
    thermal: np.ndarray  # float32 [PH, PW] thermal brightness
    grain: np.ndarray  # float32 [PH, PW] texture around 0 (reused for fabric folds)


class _Palette:
    """Collects materials while a place is being laid out."""

    def __init__(self) -> None:
        self.rgb: list[tuple[float, float, float]] = []
        self.nir: list[float] = []
        self.thermal: list[float] = []

    def add(self, rgb, nir: float, thermal: float) -> int:
        red, green, blue = (float(c) for c in np.clip(rgb, 0, 1))
        self.rgb.append((red, green, blue))
        self.nir.append(float(nir))
        self.thermal.append(float(thermal))
        return len(self.rgb) - 1


def _hsv(rng: np.random.Generator, sat=(0.0, 0.35), val=(0.45, 0.92)):
    return colorsys.hsv_to_rgb(float(rng.random()), float(rng.uniform(*sat)), float(rng.uniform(*val)))


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise: bilinear upsampling of a coarse random grid."""
    coarse = rng.normal(0, 1, (cells + 1, cells * width // max(height, 1) + 2))
    ys = np.linspace(0, coarse.shape[0] - 1.001, height)
    xs = np.linspace(0, coarse.shape[1] - 1.001, width)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    c = coarse
    top = c[y0][:, x0] * (1 - fx) + c[y0][:, x0 + 1] * fx
    bottom = c[y0 + 1][:, x0] * (1 - fx) + c[y0 + 1][:, x0 + 1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _indoor(rng: np.random.Generator, index: np.ndarray, pal: _Palette) -> None:
    ph, pw = index.shape
    horizon = int(ph * rng.uniform(0.6, 0.75))
    index[:horizon] = pal.add(
        _hsv(rng, sat=(0.0, 0.18), val=(0.55, 0.95)), rng.uniform(0.45, 0.8), rng.uniform(0.33, 0.42)
    )
    for _ in range(int(rng.integers(3, 7))):  # doors, windows, pillars, notice boards
        kind = rng.choice(["door", "window", "pillar", "board"])
        w = int(pw * rng.uniform(0.06, 0.18))
        x = int(rng.integers(0, pw - w))
        y0, y1 = {
            "door": (int(horizon * rng.uniform(0.15, 0.3)), horizon),
            "window": (int(horizon * 0.15), int(horizon * 0.55)),
            "pillar": (0, horizon),
            "board": (int(horizon * 0.3), int(horizon * 0.6)),
        }[kind]
        glass = kind == "window"
        index[y0:y1, x : x + w] = pal.add(
            _hsv(rng, sat=(0, 0.5), val=(0.2, 0.95)) if not glass else _hsv(rng, sat=(0.1, 0.3), val=(0.6, 0.95)),
            rng.uniform(0.1, 0.3) if glass else rng.uniform(0.2, 0.8),
            rng.uniform(0.25, 0.35) if glass else rng.uniform(0.3, 0.45),
        )
    index[horizon - max(2, ph // 60) : horizon] = pal.add(_hsv(rng, val=(0.1, 0.4)), rng.uniform(0.2, 0.5), 0.35)
    tile, grout = (
        pal.add(_hsv(rng, val=(0.35, 0.85)), rng.uniform(0.35, 0.7), rng.uniform(0.3, 0.38)),
        pal.add(_hsv(rng, val=(0.2, 0.6)), rng.uniform(0.2, 0.5), rng.uniform(0.3, 0.38)),
    )
    index[horizon:] = tile
    step = rng.uniform(0.04, 0.08) * ph
    y = horizon + step * 0.5
    while y < ph:  # grout lines spread out towards the camera (rough perspective)
        index[int(y)] = grout
        step *= 1.25
        y += step
    cols = np.arange(0, pw, int(pw * rng.uniform(0.08, 0.15)))
    index[horizon:, cols] = grout


def _outdoor(rng: np.random.Generator, index: np.ndarray, pal: _Palette) -> None:
    ph, pw = index.shape
    horizon = int(ph * rng.uniform(0.55, 0.7))
    sky_end = int(horizon * rng.uniform(0.0, 0.3))
    index[:sky_end] = pal.add(_hsv(rng, sat=(0.05, 0.4), val=(0.75, 0.98)), 0.3, 0.05)
    facade = pal.add(_hsv(rng, sat=(0, 0.3), val=(0.4, 0.9)), rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.4))
    index[sky_end:horizon] = facade
    window = pal.add(_hsv(rng, sat=(0, 0.2), val=(0.1, 0.45)), rng.uniform(0.05, 0.2), rng.uniform(0.2, 0.3))
    wx, wy = int(pw * rng.uniform(0.06, 0.12)), int(ph * rng.uniform(0.08, 0.14))
    for y in range(sky_end + wy // 2, horizon - wy, int(wy * 1.8)):
        for x in range(int(rng.integers(0, wx)), pw - wx, int(wx * 1.9)):
            index[y : y + wy, x : x + wx] = window
    for _ in range(int(rng.integers(1, 4))):  # trees and hedges: very bright in near-infrared
        w = int(pw * rng.uniform(0.1, 0.35))
        x = int(rng.integers(0, pw - w))
        y0 = int(rng.uniform(sky_end, horizon * 0.8))
        index[y0:horizon, x : x + w] = pal.add(
            colorsys.hsv_to_rgb(
                float(rng.uniform(0.22, 0.38)), float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.2, 0.55))
            ),
            rng.uniform(0.75, 0.92),
            rng.uniform(0.15, 0.28),
        )
    ground = pal.add(_hsv(rng, sat=(0, 0.15), val=(0.3, 0.7)), rng.uniform(0.25, 0.5), rng.uniform(0.3, 0.45))
    index[horizon:] = ground
    curb = pal.add(_hsv(rng, sat=(0, 0.1), val=(0.5, 0.85)), rng.uniform(0.4, 0.6), 0.3)
    index[horizon : horizon + max(2, ph // 40)] = curb
    for y in range(horizon + int(ph * 0.1), ph, int(ph * rng.uniform(0.08, 0.16))):
        index[y : y + max(1, ph // 120)] = curb


def _defocus(image: np.ndarray, radius: float) -> np.ndarray:
    """Blur a float image in [0, 1] (backgrounds are out of the focal plane)."""
    pil = Image.fromarray(np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8))
    out = np.asarray(pil.filter(ImageFilter.GaussianBlur(radius)), np.float32) / 255.0
    out.flags.writeable = False
    return out


@lru_cache(maxsize=64)
def build_place(scene: str, scene_seed: int, height: int, width: int) -> Place:
    """The fixed place a camera watches, ``height`` x ``width`` (bigger than one crop)."""
    rng = np.random.default_rng([scene_seed, 0 if scene == "indoor" else 1, 9001])
    index = np.zeros((height, width), np.uint8)
    pal = _Palette()
    (_indoor if scene == "indoor" else _outdoor)(rng, index, pal)
    grain = 0.12 * _smooth_noise(rng, height, width, 6) + 0.04 * rng.normal(0, 1, (height, width)).astype(np.float32)
    radius = height / 180
    texture = 1 + grain
    grain.flags.writeable = False
    return Place(
        rgb=_defocus(np.asarray(pal.rgb, np.float32)[index] * texture[..., None], radius),
        nir=_defocus(np.asarray(pal.nir, np.float32)[index] * texture, radius),
        thermal=_defocus(np.asarray(pal.thermal, np.float32)[index] * (1 + 0.5 * grain), radius),
        grain=grain,
    )
