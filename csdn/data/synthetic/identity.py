"""Persistent appearance of a synthetic pedestrian (what stays the same across images).

Every surface carries three independent optical properties: its visible albedo
(``rgb``), its near-infrared reflectance (``nir``, what the active-IR cameras of
SYSU-MM01 and LLCM see) and its thermal brightness (``thermal``, what RegDB's
far-infrared camera sees).  The infrared properties of a garment come from its
fabric, thickness and dye chemistry, which are drawn *independently of its
visible colour*, so colour is the strongest cue within visible images and
carries no information across modalities, as in real VI-ReID data.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

UPPER_KINDS = ("tshirt", "longsleeve", "jacket", "coat")
LOWER_KINDS = ("trousers", "shorts", "skirt")
PATTERNS = ("plain", "stripes", "checks", "logo")
HAIR_STYLES = ("short", "long", "ponytail", "cropped", "cap")
BAGS = ("none", "backpack", "shoulder", "hand")

# fabric -> (base NIR reflectance, thermal emissivity); dyes shift NIR, thickness insulates.
FABRICS = {
    "cotton": (0.70, 0.95),
    "denim": (0.55, 0.93),
    "wool": (0.60, 0.96),
    "polyester": (0.45, 0.90),
    "nylon": (0.40, 0.85),
    "leather": (0.30, 0.80),
}
# typical thickness range of each upper garment (thin tee .. padded coat)
_UPPER_THICKNESS = {"tshirt": (0.05, 0.3), "longsleeve": (0.15, 0.5), "jacket": (0.4, 0.8), "coat": (0.6, 1.0)}
_SKIN_TONES = np.array(
    [[0.96, 0.80, 0.69], [0.90, 0.72, 0.58], [0.80, 0.60, 0.46], [0.65, 0.46, 0.34], [0.45, 0.31, 0.22]]
)
_HAIR_COLOURS = np.array(
    [[0.07, 0.06, 0.05], [0.16, 0.11, 0.07], [0.35, 0.22, 0.12], [0.70, 0.55, 0.32], [0.55, 0.53, 0.50]]
)


@dataclass(frozen=True)
class Material:
    """Optical properties of one surface, each in [0, 1]."""

    rgb: tuple[float, float, float]
    nir: float
    thermal: float


@dataclass(frozen=True)
class Garment:
    """A piece of clothing: shape (``kind``), look (``material``, ``pattern``) and physics."""

    kind: str
    material: Material
    fabric: str
    thickness: float
    pattern: str = "plain"
    pattern_material: Material | None = None
    pattern_scale: float = 0.0  # stripe/check period as a fraction of body height


@dataclass(frozen=True)
class Identity:
    """Everything that makes one synthetic person recognisable across images and cameras."""

    pid: int
    height: float  # fraction of the crop height the person fills at scale 1
    build: float  # width multiplier (0.85 slim .. 1.2 broad)
    head_size: float
    skin: Material
    hair_style: str
    hair: Material
    upper: Garment
    lower: Garment
    shoes: Material
    bag: str
    bag_material: Material | None
    hat: Material | None


def _clothing_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    """Realistic wardrobe: many neutrals (black, grey, navy, white), the rest saturated hues."""
    if rng.random() < 0.35:
        value = float(rng.choice([0.08, 0.2, 0.4, 0.6, 0.85, 0.95]) + rng.normal(0, 0.03))
        hue, sat = float(rng.random()), float(rng.uniform(0.0, 0.12))
    else:
        hue, sat, value = float(rng.random()), float(rng.uniform(0.35, 0.95)), float(rng.uniform(0.25, 0.95))
    r, g, b = colorsys.hsv_to_rgb(hue, sat, float(np.clip(value, 0.02, 1.0)))
    return (r, g, b)


def garment_infrared(fabric: str, thickness: float, dye_nir: float) -> tuple[float, float]:
    """(NIR reflectance, thermal brightness) of a garment from its physics alone.

    NIR: fabric base reflectance scaled by the dye's NIR transparency (``dye_nir``;
    carbon-black dyes absorb NIR, most other dyes are transparent to it whatever
    their visible colour). Thermal: skin heat leaks through thin fabric, so the
    surface is brighter the thinner the garment.
    """
    base_nir, emissivity = FABRICS[fabric]
    nir = base_nir * (0.35 + 0.65 * dye_nir) * (0.85 + 0.15 * thickness)
    thermal = emissivity * (0.30 + 0.60 * np.exp(-2.2 * thickness))
    return float(np.clip(nir, 0.03, 0.95)), float(np.clip(thermal, 0.05, 0.95))


def _material(rng: np.random.Generator, fabric: str, thickness: float) -> Material:
    nir, thermal = garment_infrared(fabric, thickness, float(rng.beta(1.3, 1.0)))
    return Material(_clothing_colour(rng), nir, thermal)


def _pattern(rng: np.random.Generator, fabric: str, thickness: float) -> tuple[str, Material | None, float]:
    pattern = str(rng.choice(PATTERNS, p=[0.55, 0.2, 0.12, 0.13]))
    if pattern == "plain":
        return pattern, None, 0.0
    # a second yarn/print: its own colour, NIR close to the base fabric's but not equal
    second = _material(rng, fabric, thickness)
    return pattern, second, float(rng.uniform(0.025, 0.06))


def _upper(rng: np.random.Generator) -> Garment:
    kind = str(rng.choice(UPPER_KINDS, p=[0.35, 0.3, 0.22, 0.13]))
    fabrics = ["cotton", "wool", "polyester", "nylon", "leather", "denim"]
    fabric = str(rng.choice(fabrics, p=[0.4, 0.15, 0.2, 0.12, 0.05, 0.08]))
    thickness = float(rng.uniform(*_UPPER_THICKNESS[kind]))
    pattern, second, scale = _pattern(rng, fabric, thickness)
    return Garment(kind, _material(rng, fabric, thickness), fabric, thickness, pattern, second, scale)


def _lower(rng: np.random.Generator) -> Garment:
    kind = str(rng.choice(LOWER_KINDS, p=[0.65, 0.15, 0.2]))
    fabric = str(rng.choice(["denim", "cotton", "polyester", "wool"], p=[0.4, 0.3, 0.2, 0.1]))
    thickness = float(rng.uniform(0.1, 0.35) if kind == "shorts" else rng.uniform(0.2, 0.75))
    return Garment(kind, _material(rng, fabric, thickness), fabric, thickness)


def _plain(rng: np.random.Generator, rgb, nir_range, thermal_range) -> Material:
    rgb = tuple(float(c) for c in np.clip(rgb, 0, 1))
    return Material(rgb, float(rng.uniform(*nir_range)), float(rng.uniform(*thermal_range)))


def sample_identity(rng: np.random.Generator, pid: int = 0) -> Identity:
    """Draw one person's persistent attributes from ``rng`` (use one generator per identity)."""
    skin_rgb = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.93, 1.05)
    skin = _plain(rng, skin_rgb, (0.55, 0.8), (0.88, 0.98))
    hair_style = str(rng.choice(HAIR_STYLES, p=[0.4, 0.25, 0.12, 0.1, 0.13]))
    hair_rgb = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=[0.5, 0.25, 0.12, 0.08, 0.05])]
    hair = _plain(rng, hair_rgb * rng.uniform(0.9, 1.15), (0.15, 0.6), (0.5, 0.72))
    hat = _material(rng, "cotton", 0.3) if hair_style == "cap" else None
    upper, lower = _upper(rng), _lower(rng)
    shoe_rgb = (
        _clothing_colour(rng) if rng.random() < 0.4 else np.full(3, rng.choice([0.06, 0.15, 0.9]))
    )  # black/grey/white
    shoes = _plain(rng, shoe_rgb, (0.1, 0.6), (0.2, 0.4))
    bag = str(rng.choice(BAGS, p=[0.45, 0.25, 0.18, 0.12]))
    bag_material = None if bag == "none" else _plain(rng, _clothing_colour(rng), (0.1, 0.7), (0.15, 0.35))
    return Identity(
        pid=int(pid),
        height=float(rng.uniform(0.78, 0.92)),
        build=float(rng.uniform(0.85, 1.2)),
        head_size=float(rng.uniform(0.92, 1.08)),
        skin=skin,
        hair_style=hair_style,
        hair=hair,
        upper=upper,
        lower=lower,
        shoes=shoes,
        bag=bag,
        bag_material=bag_material,
        hat=hat,
    )
